"""Score with vLLM's offline `LLM` engine (GPU): the way to run the released 7B scorer/styler at scale.

- Scores: one request per (sample, capability) with `max_tokens=1`, greedy, `allowed_token_ids` = the
  digit tokens and `logprob_token_ids` = the same ids (vLLM >= the release that added it), so the one
  returned step carries the log-probability of each digit; renormalised over 0..5 that is exactly the
  next-token distribution restricted to the digits. Older vLLM: `logprobs=k` top-k, renormalised over the
  digits that appear (the sampled digit always does); documented as approximate.
- Prefix caching (on by default) lets the 15 prompts of a sample share the image + conversation prefix:
  they are submitted together in one `generate` call.
- Styles: structured outputs (`StructuredOutputsParams(regex=...)`, or `GuidedDecodingParams` on older
  vLLM) restricted to comma-separated known labels, then parsed with `prompts.parse_styles`.
- Tensor parallel is the engine's; data parallel runs one engine per GPU group in worker processes (vLLM
  refuses `LLM(data_parallel_size>1)` in one process) and splits each batch across them.

vLLM is imported only when the engine is first needed, so this module imports on any machine.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from mmssr_core.prompts import DIGITS, IMAGE_TOKEN, PromptSet, chatml, load_scorer_image, parse_styles
from mmssr_core.scoring.base import Failure, ScoreRequest, ScorerIdentity, renormalise

_REGEX_SPECIAL = set(".^$*+?{}[]\\|()")


def _regex_escape(text: str) -> str:
    """Escape only regex metacharacters (some structured-output regex engines reject `\\-`, `\\ `)."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def styles_regex(labels: Sequence[str]) -> str:
    """`label(, label)*` over the known labels: what the styler is allowed to answer."""
    alt = "(" + "|".join(_regex_escape(label) for label in labels) + ")"
    return f"{alt}(, {alt})*"


def user_text(request: ScoreRequest, has_image: bool, image_token: str = IMAGE_TOKEN) -> str:
    """The user-turn prefix with the image placeholder placed as the transformers backend does."""
    text = request.prefix
    if has_image and image_token not in text:
        return f"{image_token}\n{text}"
    if not has_image and image_token in text:
        return text.replace(f"{image_token}\n", "").replace(image_token, "")
    return text


class VLLMBackend:
    """Offline vLLM engine behind the scoring protocol."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        max_model_len: int | None = 8192,
        gpu_memory_utilization: float = 0.9,
        enable_prefix_caching: bool = True,
        *,
        dtype: str = "auto",
        revision: str = "",
        batch_size: int = 64,
        max_style_tokens: int = 64,
        fallback_logprobs: int = 20,
        model_name: str | None = None,
        mp_context: str = "spawn",
        **engine_kwargs: Any,
    ):
        self.model = model
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.data_parallel_size = max(1, int(data_parallel_size))
        self.dtype = dtype
        self.revision = revision
        self.batch_size = batch_size
        self.max_style_tokens = max_style_tokens
        self.fallback_logprobs = fallback_logprobs
        self.model_name = model_name or os.path.basename(os.path.normpath(model))
        self.mp_context = mp_context
        kwargs = dict(
            model=model,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=enable_prefix_caching,
            dtype=dtype,
            limit_mm_per_prompt={"image": 1},
            seed=0,
        )
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if revision:
            kwargs["revision"] = revision
        kwargs.update(engine_kwargs)
        self.engine_kwargs = kwargs
        self._llm = None
        self._workers: list | None = None

    # ------------------------------------------------------------------ engine
    def _vllm(self):
        try:
            import vllm
        except ImportError as exc:  # pragma: no cover - message only
            raise RuntimeError(
                "the vllm backend needs the `vllm` package and a CUDA GPU (pip install 'mmssr[vllm]'); "
                "on a CPU machine use --backend transformers, or point --backend openai at a vLLM server"
            ) from exc
        return vllm

    @property
    def llm(self):
        if self._llm is None:
            self._llm = self._vllm().LLM(**self.engine_kwargs)
            tok = self._llm.get_tokenizer()
            ids = []
            for d in DIGITS:
                enc = tok.encode(d, add_special_tokens=False)
                if len(enc) != 1:
                    raise ValueError(f"tokenizer of {self.model} encodes digit {d!r} as {enc}: not one token")
                ids.append(enc[0])
            self.digit_ids = ids
            im_end = tok.convert_tokens_to_ids("<|im_end|>")
            self.stop_ids = [i for i in {im_end, tok.eos_token_id} if isinstance(i, int) and i >= 0]
        return self._llm

    def _sampling_params(self, **kwargs):
        return self._vllm().SamplingParams(**kwargs)

    def score_params(self):
        """SamplingParams for one digit distribution; (params, exact) where exact says whether every
        digit's log-probability is returned (logprob_token_ids) or only the top-k (fallback)."""
        ids = list(self.digit_ids)
        base = dict(max_tokens=1, temperature=0.0, allowed_token_ids=ids, detokenize=False)
        try:
            return self._sampling_params(**base, logprobs=len(ids), logprob_token_ids=ids), True
        except TypeError:  # vLLM without logprob_token_ids
            return self._sampling_params(**base, logprobs=self.fallback_logprobs), False

    def style_params(self, labels: Sequence[str]):
        regex = styles_regex(labels)
        common = dict(max_tokens=self.max_style_tokens, temperature=0.0, stop_token_ids=self.stop_ids)
        sp_mod = self._vllm().sampling_params
        if hasattr(sp_mod, "StructuredOutputsParams"):
            return self._sampling_params(**common, structured_outputs=sp_mod.StructuredOutputsParams(regex=regex))
        if hasattr(sp_mod, "GuidedDecodingParams"):
            return self._sampling_params(**common, guided_decoding=sp_mod.GuidedDecodingParams(regex=regex))
        raise RuntimeError("this vLLM offers neither StructuredOutputsParams nor GuidedDecodingParams")

    def identity(self, prompts: PromptSet) -> ScorerIdentity:
        revision = self.revision
        if not revision and os.path.isdir(self.model):
            from mmssr_core.scoring.transformers_backend import checkpoint_revision

            revision = checkpoint_revision(self.model)
        return ScorerIdentity(
            backend=self.name,
            model=self.model_name,
            revision=revision,
            prompt_version=prompts.version,
            extra=(("dtype", str(self.dtype)), ("image", "anyres-384")),
        )

    def close(self) -> None:
        if self._workers:
            for proc, jobs, _ in self._workers:
                jobs.put(None)
                proc.join(timeout=60)
        self._workers = None
        self._llm = None

    # ------------------------------------------------------------------ prompts
    def _inputs(self, requests: Sequence[ScoreRequest]):
        """(index, prompt prefix text, PIL image or None) per loadable request, and failures."""
        ok, failures = [], {}
        for i, req in enumerate(requests):
            try:
                image = load_scorer_image(req.image_file)
            except Exception as exc:
                failures[i] = Failure("image_error", f"{req.sample_id}: {type(exc).__name__}: {exc}")
                continue
            ok.append((i, user_text(req, image is not None), image))
        return ok, failures

    @staticmethod
    def build_prompt(user: str, query: str, image) -> dict:
        prompt: dict[str, Any] = {"prompt": chatml(user + query)}
        if image is not None:
            prompt["multi_modal_data"] = {"image": image}
        return prompt

    def parse_digits(self, output, exact: bool) -> np.ndarray | Failure:
        """One RequestOutput -> distribution over 0..5, or a Failure saying what was wrong."""
        try:
            completion = output.outputs[0]
            step = completion.logprobs[0]
        except (AttributeError, IndexError, TypeError):
            return Failure("malformed_answer", "engine returned no logprobs for the score token")
        values = []
        for tid in self.digit_ids:
            entry = step.get(tid) if hasattr(step, "get") else None
            lp = getattr(entry, "logprob", entry)
            values.append(-np.inf if lp is None else float(lp))
        values = np.array(values)
        if exact and not np.all(np.isfinite(values)):
            return Failure("malformed_answer", "logprob_token_ids did not return every digit")
        try:
            return renormalise(values)
        except ValueError as exc:
            return Failure("malformed_answer", str(exc))

    # ------------------------------------------------------------------ protocol
    def digit_distributions(
        self, requests: Sequence[ScoreRequest], queries: Sequence[str], prompts: PromptSet
    ) -> list[list[Any]]:
        if self.data_parallel_size > 1:
            return self._fan_out("digits", requests, queries, prompts)
        results: list[list[Any]] = [[None] * len(queries) for _ in requests]
        ok, failures = self._inputs(requests)
        for i, f in failures.items():
            results[i] = [f] * len(queries)
        if not ok:
            return results
        llm = self.llm
        params, exact = self.score_params()
        # All queries of a sample consecutively: they share the prefix blocks in vLLM's prefix cache.
        batch = [self.build_prompt(user, q, image) for _, user, image in ok for q in queries]
        outputs = llm.generate(batch, params, use_tqdm=False)
        if len(outputs) != len(batch):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(batch)} prompts")
        it = iter(outputs)
        for i, _, _ in ok:
            for j in range(len(queries)):
                results[i][j] = self.parse_digits(next(it), exact)
        return results

    def styles(self, requests: Sequence[ScoreRequest], prompts: PromptSet) -> list[Any]:
        if self.data_parallel_size > 1:
            return self._fan_out("styles", requests, None, prompts)
        results: list[Any] = [None] * len(requests)
        ok, failures = self._inputs(requests)
        for i, f in failures.items():
            results[i] = f
        if not ok:
            return results
        llm = self.llm
        params = self.style_params(prompts.styles)
        batch = [self.build_prompt(user, prompts.style_query, image) for _, user, image in ok]
        outputs = llm.generate(batch, params, use_tqdm=False)
        for (i, _, _), out in zip(ok, outputs):
            try:
                text = out.outputs[0].text
            except (AttributeError, IndexError):
                results[i] = Failure("malformed_answer", f"{requests[i].sample_id}: empty output")
                continue
            try:
                results[i] = parse_styles(text or "", prompts.styles)
            except ValueError as exc:
                results[i] = Failure("malformed_answer", f"{requests[i].sample_id}: {exc}")
        return results

    # ------------------------------------------------------------------ data parallel
    def _device_groups(self) -> list[str]:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(self.data_parallel_size * self.tensor_parallel_size)]
        need = self.data_parallel_size * self.tensor_parallel_size
        if len(devices) < need:
            raise RuntimeError(
                f"data_parallel_size={self.data_parallel_size} x tensor_parallel_size={self.tensor_parallel_size} "
                f"needs {need} GPUs, CUDA_VISIBLE_DEVICES lists {len(devices)}"
            )
        tp = self.tensor_parallel_size
        return [",".join(devices[r * tp : (r + 1) * tp]) for r in range(self.data_parallel_size)]

    def _start_workers(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context(self.mp_context)
        options = dict(
            model=self.model,
            tensor_parallel_size=self.tensor_parallel_size,
            data_parallel_size=1,
            dtype=self.dtype,
            revision=self.revision,
            batch_size=self.batch_size,
            max_style_tokens=self.max_style_tokens,
            fallback_logprobs=self.fallback_logprobs,
            model_name=self.model_name,
            **{k: v for k, v in self.engine_kwargs.items() if k not in ("model", "tensor_parallel_size", "dtype", "revision")},
        )
        self._workers = []
        for devices in self._device_groups():
            jobs, answers = ctx.Queue(), ctx.Queue()
            proc = ctx.Process(target=_dp_worker, args=(devices, options, jobs, answers), daemon=True)
            proc.start()
            self._workers.append((proc, jobs, answers))

    def _fan_out(self, kind, requests, queries, prompts):
        if self._workers is None:
            self._start_workers()
        n = len(self._workers)
        shards = [list(range(r, len(requests), n)) for r in range(n)]
        for (proc, jobs, _), idx in zip(self._workers, shards):
            jobs.put((kind, [requests[i] for i in idx], queries, prompts))
        merged: list[Any] = [None] * len(requests)
        for (proc, _, answers), idx in zip(self._workers, shards):
            status, payload = answers.get()
            if status != "ok":
                raise RuntimeError(f"vLLM data-parallel worker failed: {payload}")
            for i, value in zip(idx, payload):
                merged[i] = value
        return merged

    def worker_info(self) -> list[dict]:
        """CUDA_VISIBLE_DEVICES and engine kwargs of each data-parallel worker (for checks and logs)."""
        if self._workers is None:
            self._start_workers()
        for _, jobs, _ in self._workers:
            jobs.put(("info", None, None, None))
        return [answers.get()[1] for _, _, answers in self._workers]


def _dp_worker(devices: str, options: dict, jobs, answers) -> None:
    """One data-parallel rank: its own GPUs, its own engine, jobs until None."""
    os.environ["CUDA_VISIBLE_DEVICES"] = devices
    backend = VLLMBackend(**options)
    while True:
        job = jobs.get()
        if job is None:
            break
        kind, requests, queries, prompts = job
        try:
            if kind == "digits":
                answers.put(("ok", backend.digit_distributions(requests, queries, prompts)))
            elif kind == "styles":
                answers.put(("ok", backend.styles(requests, prompts)))
            else:
                answers.put(("ok", {"devices": os.environ["CUDA_VISIBLE_DEVICES"], "engine_kwargs": backend.engine_kwargs}))
        except Exception as exc:  # report, never hang the parent
            answers.put(("error", f"{type(exc).__name__}: {exc}"))
    backend.close()
