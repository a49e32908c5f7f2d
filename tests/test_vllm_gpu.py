"""The vLLM check at the released scorer's dimensions, on a user's CUDA machine with vLLM's CUDA build.

A random-weight LLaVA-OneVision shaped like mmssr-7b-scorer (Qwen2-7B text: hidden 3584, 28 layers, GQA 28/4,
the real Qwen2 vocabulary; SigLIP-so400m-384/14 tower), built from a config on the GPU machine (nothing is
downloaded). `mmssr score --backend vllm` must score every sample with integers equal to the transformers
backend's wherever the top two digits differ by more than 1e-3, and the engine must be fed the golden
reference token ids with 730 image features. Skipped without a CUDA GPU and vLLM's CUDA build; never run
in CI (the CPU-build test `test_vllm_engine.py` checks the same on a tiny model there).

    MMSSR_GPU_TEST_LAYERS=28 MMSSR_GPU_TEST_DTYPE=float32 pytest -m gpu tests/test_vllm_gpu.py
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.slow]

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
vllm = pytest.importorskip("vllm", reason="needs vLLM's CUDA build (pip install 'mmssr[vllm]')")
if "cpu" in getattr(vllm, "__version__", ""):
    pytest.skip("vLLM's CPU build is installed: the GPU check needs the CUDA build", allow_module_level=True)

from golden_support import QWEN_IMAGE_ID, collapse_image_runs, golden_ids, load_golden_requests  # noqa: E402
from vllm_support import assert_same_scores, last_json, mmssr, transformers_reference  # noqa: E402

LAYERS = int(os.environ.get("MMSSR_GPU_TEST_LAYERS", "28"))
DTYPE = os.environ.get("MMSSR_GPU_TEST_DTYPE", "float32")  # bf16 flips near-tied integers of a random model


def build_7b_shaped(directory):
    """Random LLaVA-OneVision at mmssr-7b-scorer's dimensions, written in the llava-hf layout."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    from mmssr_core.scoring.chat_template import CHAT_TEMPLATE
    from mmssr_core.testing.qwen2_tokenizer import QWEN2_VOCAB_SIZE, build_qwen2_tokenizer
    from mmssr_core.testing.tiny_models import build_processor, save_llava_hf_layout

    tokenizer = build_qwen2_tokenizer(chat_template=CHAT_TEMPLATE)
    text = Qwen2Config(
        vocab_size=QWEN2_VOCAB_SIZE,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=LAYERS,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        bos_token_id=151643,
        eos_token_id=151645,
    )
    vision = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=26,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
        vision_use_head=False,
    )
    config = LlavaOnevisionConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        image_token_index=151646,
        video_token_index=151647,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[384, 384]],
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlavaOnevisionForConditionalGeneration(config).to(getattr(torch, DTYPE)).eval()
    save_llava_hf_layout(model, directory)
    del model
    torch.cuda.empty_cache()
    build_processor(tokenizer, config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_7b_shaped(tmp_path_factory.mktemp("mmssr-7b-shaped") / "ckpt")


def test_vllm_at_7b_dimensions_matches_transformers(checkpoint, shared_data, tmp_path):
    from mmssr_core.ingest import ingest_source
    from mmssr_core.store import Store

    store = tmp_path / "store"
    ingest_source(shared_data / "math_vision_testmini", "mini", Store(store))
    out = mmssr(
        "score",
        "--store",
        str(store),
        "--source",
        "mini",
        "--backend",
        "vllm",
        "--model",
        str(checkpoint),
        "--dtype",
        DTYPE,
        "--option",
        "max_model_len=8192",
        "--json",
        timeout=3600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = last_json(out.stdout)
    assert summary["failed"] == 0 and summary["scored"] == 304
    reference, prompts = transformers_reference(checkpoint, store, device="cuda", source="mini", limit=32)
    assert assert_same_scores(store, reference, prompts, source="mini") > 0


def test_engine_at_7b_dimensions_is_fed_the_golden_ids(checkpoint, shared_data, tmp_path):
    from vllm import SamplingParams

    from mmssr_core.scoring.vllm_backend import VLLMBackend

    doc, prompts, pairs = load_golden_requests(shared_data, tmp_path / "golden")
    backend = VLLMBackend(str(checkpoint), dtype=DTYPE, max_model_len=8192)
    try:
        llm = backend._engine(prompts.profile)
        batch, expected = [], []
        for row, request in pairs:
            ((_, user, image),) = backend._inputs([request])[0]
            batch.append(backend.build_prompt(user, prompts.style_query, image, prompts.profile))
            expected.append(golden_ids(row, "style"))
        for out, want in zip(llm.generate(batch, SamplingParams(max_tokens=1)), expected):
            collapsed, runs = collapse_image_runs(list(out.prompt_token_ids), QWEN_IMAGE_ID, -200)
            assert runs == [730] and collapsed == want
    finally:
        backend.close()
