"""The vLLM backend's logic for what the real engine cannot show on this machine.

The real engine (vLLM's CPU build) is tested in `test_vllm_engine.py`. A fake `vllm` module stands in here
only for what cannot run here: several GPUs (data parallelism), an older vLLM without
`logprob_token_ids` (the top-k fallback), and malformed engine outputs (empty completions, no logprobs).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest

from mmssr_core.prompts import DIGITS, PromptSet
from mmssr_core.scoring.base import Failure, ScoreRequest, get_backend
from mmssr_core.scoring.vllm_backend import VLLMBackend, styles_regex
from mmssr_core.taxonomy import Taxonomy

DIGIT_IDS = [100 + i for i in range(len(DIGITS))]
IM_END = 7


class FakeTokenizer:
    def encode(self, text, add_special_tokens=False):
        if text in DIGITS:
            return [DIGIT_IDS[int(text)]]
        return [ord(c) for c in text]

    def convert_tokens_to_ids(self, token):
        return IM_END if token == "<|im_end|>" else None

    eos_token_id = IM_END


def fake_logprobs(prompt_text: str) -> list[float]:
    """Deterministic per prompt, so the test can recompute what the engine 'returned'."""
    h = hashlib.sha256(prompt_text.encode()).digest()
    return [-(b / 32.0) for b in h[: len(DIGITS)]]


@dataclass
class Logprob:
    logprob: float
    rank: int = 1
    decoded_token: str | None = None


@dataclass
class Completion:
    text: str
    token_ids: list
    logprobs: list | None


@dataclass
class RequestOutput:
    prompt: str
    outputs: list


def make_fake_vllm(*, logprob_token_ids=True, structured=True, style_answer="multi-choice, yes/no", mode="ok"):
    mod = types.ModuleType("vllm")
    sp = types.ModuleType("vllm.sampling_params")

    class SamplingParams:
        __struct_fields__ = ("max_tokens", "logprobs") + (("logprob_token_ids",) if logprob_token_ids else ())

        def __init__(self, **kwargs):
            if "logprob_token_ids" in kwargs and not logprob_token_ids:
                raise TypeError("unexpected keyword argument 'logprob_token_ids'")
            self.kwargs = kwargs
            for k, v in kwargs.items():
                setattr(self, k, v)

    if structured:

        @dataclass
        class StructuredOutputsParams:
            regex: str | None = None

        sp.StructuredOutputsParams = StructuredOutputsParams
    else:

        @dataclass
        class GuidedDecodingParams:
            regex: str | None = None

        sp.GuidedDecodingParams = GuidedDecodingParams

    class LLM:
        instances: list = []

        def __init__(self, **kwargs):
            import os

            self.kwargs = kwargs
            self.devices = os.environ.get("CUDA_VISIBLE_DEVICES")
            self.calls = []
            LLM.instances.append(self)

        def get_tokenizer(self):
            return FakeTokenizer()

        def generate(self, prompts, params, use_tqdm=True):
            self.calls.append((prompts, params))
            outs = []
            for p in prompts:
                text = p["prompt"]
                if mode == "empty":
                    outs.append(RequestOutput(text, []))
                    continue
                if getattr(params, "structured_outputs", None) or getattr(params, "guided_decoding", None):
                    outs.append(RequestOutput(text, [Completion(style_answer, [1, 2], None)]))
                    continue
                if mode == "no_logprobs":
                    outs.append(RequestOutput(text, [Completion("3", [DIGIT_IDS[3]], None)]))
                    continue
                lps = fake_logprobs(text)
                best = int(np.argmax(lps))
                if getattr(params, "logprob_token_ids", None):
                    step = {tid: Logprob(lps[i]) for i, tid in enumerate(params.logprob_token_ids)}
                else:  # top-k fallback: pretend only the 3 best digits made the top-k
                    top = sorted(range(len(DIGITS)), key=lambda i: -lps[i])[:3]
                    step = {DIGIT_IDS[i]: Logprob(lps[i]) for i in top}
                    step[42] = Logprob(-0.01)  # a non-digit token ranked above them
                outs.append(RequestOutput(text, [Completion(DIGITS[best], [DIGIT_IDS[best]], [step])]))
            return outs

    mod.LLM = LLM
    mod.SamplingParams = SamplingParams
    mod.sampling_params = sp
    return mod


@pytest.fixture
def fake_vllm(monkeypatch):
    from mmssr_core.scoring import vllm_plugin

    monkeypatch.setattr(vllm_plugin, "register", lambda: None)  # the fake has no model registry

    def install(**kwargs):
        mod = make_fake_vllm(**kwargs)
        monkeypatch.setitem(sys.modules, "vllm", mod)
        monkeypatch.setitem(sys.modules, "vllm.sampling_params", mod.sampling_params)
        return mod

    return install


@pytest.fixture(scope="module")
def prompts():
    return PromptSet.from_taxonomy(Taxonomy())


@pytest.fixture(scope="module")
def requests_(shared_data, prompts):
    root = shared_data / "math_vision_testmini"
    pool = json.loads((root / "pool.llava.json").read_text())[:2]
    out = [
        ScoreRequest(
            key=s["id"], sample_id=s["id"], prefix=prompts.prefix(s["conversations"]), image_file=str(root / s["image"])
        )
        for s in pool
    ]
    conv = [{"from": "human", "value": "Name a prime number."}, {"from": "gpt", "value": "7"}]
    out.append(ScoreRequest(key="t", sample_id="text-only", prefix=prompts.prefix(conv), image_file=None))
    return out


def test_module_imports_without_vllm():
    assert "vllm" not in sys.modules or isinstance(sys.modules["vllm"], types.ModuleType)
    backend = VLLMBackend("/models/x")  # no engine yet
    assert backend._llm is None


def test_engine_settings_pass_through(fake_vllm, requests_, prompts):
    mod = fake_vllm()
    backend = get_backend(
        "vllm",
        model="/ckpt/mmssr-7b-scorer",
        tensor_parallel_size=2,
        max_model_len=4096,
        gpu_memory_utilization=0.8,
        enforce_eager=True,
    )
    backend.digit_distributions(requests_[:1], prompts.capability_queries[:1], prompts)
    (llm,) = mod.LLM.instances
    kw = llm.kwargs
    assert kw["model"] == "/ckpt/mmssr-7b-scorer"
    assert kw["tensor_parallel_size"] == 2
    assert kw["enable_prefix_caching"] is True
    assert kw["max_model_len"] == 4096 and kw["gpu_memory_utilization"] == 0.8
    assert kw["enforce_eager"] is True
    assert kw["limit_mm_per_prompt"] == {"image": 1}
    assert "data_parallel_size" not in kw  # vLLM refuses single-process DP; we fan out ourselves
    # the reference profile runs mmssr's plugin: single-tile model variant, per-piece tokenizer mode
    assert kw["hf_overrides"] == {"architectures": ["MmssrSingleTileLlavaOnevision"]}
    assert kw["tokenizer_mode"] == "mmssr_reference"
    ident = backend.identity(prompts)
    assert ident.backend == "vllm" and ident.model == "mmssr-7b-scorer"
    assert dict(ident.extra) == {"dtype": "auto", "input": "reference", "digits": "exact"}


def test_topk_fallback_without_logprob_token_ids(fake_vllm, requests_, prompts):
    fake_vllm(logprob_token_ids=False)
    backend = VLLMBackend("/ckpt/m", fallback_logprobs=20)
    out = backend.digit_distributions(requests_[:1], prompts.capability_queries[:2], prompts)
    params, exact = backend.score_params()
    assert not exact and params.logprobs == 20
    assert dict(backend.identity(prompts).extra)["digits"] == "top-20"  # the approximation is recorded
    for dist in out[0]:
        assert abs(dist.sum() - 1) < 1e-12
        assert (dist == 0).sum() == 3  # digits outside the top-k get no mass (documented approximation)


def test_failures_empty_output_and_missing_logprobs(fake_vllm, requests_, prompts, tmp_path):
    fake_vllm(mode="empty")
    out = VLLMBackend("/ckpt/m").digit_distributions(requests_[:1], prompts.capability_queries[:2], prompts)
    assert all(isinstance(f, Failure) and f.reason == "malformed_answer" for f in out[0])
    styles = VLLMBackend("/ckpt/m").styles(requests_[:1], prompts)
    assert isinstance(styles[0], Failure) and "empty output" in styles[0].message

    fake_vllm(mode="no_logprobs")
    out = VLLMBackend("/ckpt/m").digit_distributions(requests_[:1], prompts.capability_queries[:1], prompts)
    assert isinstance(out[0][0], Failure)

    fake_vllm()
    bad_file = tmp_path / "bad.png"
    bad_file.write_bytes(b"garbage")
    bad = ScoreRequest(key="b", sample_id="bad-image", prefix=requests_[0].prefix, image_file=str(bad_file))
    out = VLLMBackend("/ckpt/m").digit_distributions([bad, requests_[0]], prompts.capability_queries[:2], prompts)
    assert all(isinstance(f, Failure) and f.reason == "image_error" for f in out[0])
    assert all(isinstance(d, np.ndarray) for d in out[1])


@pytest.mark.parametrize("structured", [True, False])
def test_styles_structured_outputs(fake_vllm, requests_, prompts, structured):
    mod = fake_vllm(structured=structured, style_answer="word/short-phrase, chain-of-thought (step-by-step)")
    backend = VLLMBackend("/ckpt/m", max_style_tokens=40)
    out = backend.styles(requests_, prompts)
    assert out == [["word/short-phrase", "chain-of-thought (step-by-step)"]] * len(requests_)
    (llm,) = mod.LLM.instances
    ((batch, params),) = llm.calls
    assert params.max_tokens == 40 and params.temperature == 0.0 and IM_END in params.stop_token_ids
    spec = params.structured_outputs if structured else params.guided_decoding
    rx = re.compile(spec.regex)
    assert rx.fullmatch("multi-choice, yes/no")
    assert rx.fullmatch("chain-of-thought (step-by-step)")
    assert not rx.fullmatch("multi-choice,yes/no") and not rx.fullmatch("banana")


def test_styles_unparseable_answer_is_a_failure(fake_vllm, requests_, prompts):
    fake_vllm(style_answer="")
    out = VLLMBackend("/ckpt/m").styles(requests_[:1], prompts)
    assert isinstance(out[0], Failure) and out[0].reason == "malformed_answer"


def test_styles_regex_covers_every_label(prompts):
    rx = re.compile(styles_regex(prompts.styles))
    for label in prompts.styles:
        assert rx.fullmatch(label)
    assert rx.fullmatch(", ".join(prompts.styles))


def test_data_parallel_fans_out_to_one_engine_per_gpu_group(fake_vllm, requests_, prompts, monkeypatch):
    fake_vllm()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    dp = VLLMBackend("/ckpt/m", data_parallel_size=2, tensor_parallel_size=2, mp_context="fork")
    try:
        info = dp.worker_info()
        assert [i["devices"] for i in info] == ["4,5", "6,7"]
        assert all(i["engine_kwargs"]["tensor_parallel_size"] == 2 for i in info)
        assert all(i["engine_kwargs"]["enable_prefix_caching"] is True for i in info)
        queries = prompts.capability_queries[:3]
        got = dp.digit_distributions(requests_, queries, prompts)
        styles = dp.styles(requests_, prompts)
    finally:
        dp.close()
    ref = VLLMBackend("/ckpt/m").digit_distributions(requests_, queries, prompts)
    for a, b in zip(got, ref):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y)
    assert styles == [["multi-choice", "yes/no"]] * len(requests_)


def test_data_parallel_needs_enough_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    from mmssr_core.scoring.vllm_data_parallel import device_groups

    with pytest.raises(RuntimeError, match="needs 2 GPUs"):
        device_groups(2, 1)


def test_a_failed_engine_start_stops_the_run_once(fake_vllm, requests_, prompts):
    from mmssr_core.scoring.base import BackendUnavailable

    mod = fake_vllm()
    starts = []

    def failing_llm(**kwargs):
        starts.append(kwargs)
        raise RuntimeError("Engine core initialization failed") from MemoryError("KV cache does not fit")

    mod.LLM = failing_llm
    backend = VLLMBackend("/ckpt/m")
    for _ in range(3):
        with pytest.raises(BackendUnavailable, match="KV cache does not fit"):
            backend.digit_distributions(requests_[:1], prompts.capability_queries[:1], prompts)
    assert len(starts) == 1  # remembered, never retried per batch
