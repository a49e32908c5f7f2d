"""The backend protocol: two primitives every engine can offer.

1. `digit_distributions`: for one shared prefix (image + serialised conversation) and several query
   suffixes, the next-token probability over the digit tokens 0..5 (renormalised). One forward pass per
   suffix at most; engines that can, prefill the prefix once.
2. `styles`: generation constrained to the style label set.

A backend never raises for one bad sample: it returns a `Failure` with a reason in that slot, so a
failed sample is recorded (never a crash, never a silent zero) and the others go on.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from mmssr_core.prompts import DIGITS, PromptSet


@dataclass(frozen=True)
class Failure:
    """A sample (or one query of it) that could not be scored, and why."""

    reason: str  # short code: timeout, http_5xx, malformed_answer, image_error, ...
    message: str = ""

    def __bool__(self) -> bool:  # a Failure is never a usable result
        return False


class BackendUnavailable(RuntimeError):
    """The engine itself cannot run (it failed to start, its package is missing): no sample can be scored.

    Raised instead of per-sample failures so a run stops once, fast, with the root cause, rather than
    recording the same error for every sample (or retrying the start for every batch).
    """


@dataclass(frozen=True)
class ScoreRequest:
    """One sample to score: everything any backend needs, prepared once in shared code."""

    key: str  # content_hash of the sample: the cache key (with the scorer identity)
    sample_id: str
    prefix: str  # PromptSet.prefix(conversations): serialised turns + "\n"
    image_file: str | None  # first image, absolute path; None for text-only
    conversations: tuple[dict, ...] = ()  # canonical turns, for weight-free backends
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ScorerIdentity:
    """Who produced a score: results are cached under (content_hash, identity.digest)."""

    backend: str
    model: str = ""
    revision: str = ""
    prompt_version: str = ""
    extra: tuple[tuple[str, str], ...] = ()  # settings that change results (e.g. dtype)

    @property
    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self) -> str:
        """Human-readable, stored in the `scorer` column."""
        model = f":{self.model}" if self.model else ""
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.backend}{model}{rev}/{self.prompt_version}"


DistResult = "np.ndarray | Failure"


@runtime_checkable
class ScoringBackend(Protocol):
    """What the runner needs from an engine."""

    name: str

    def identity(self, prompts: PromptSet) -> ScorerIdentity: ...

    def digit_distributions(
        self, requests: Sequence[ScoreRequest], queries: Sequence[str], prompts: PromptSet
    ) -> list[list[Any]]:
        """For each request, for each query: a float64 array of len(DIGITS) summing to 1, or a Failure."""
        ...

    def styles(self, requests: Sequence[ScoreRequest], prompts: PromptSet) -> list[Any]:
        """For each request: the ordered list of style labels (subset of prompts.styles), or a Failure."""
        ...

    def close(self) -> None: ...


def renormalise(logprobs_or_probs: np.ndarray, *, log: bool = True) -> np.ndarray:
    """Probabilities over the digits 0..5, renormalised to sum to 1 (softmax when given logprobs)."""
    x = np.asarray(logprobs_or_probs, dtype=np.float64)
    if log:
        x = np.exp(x - np.max(x))
    total = x.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("no probability mass on the digit tokens")
    return x / total


def expected_score(dist: np.ndarray) -> float:
    return float(np.dot(np.arange(len(DIGITS), dtype=np.float64), dist))


def argmax_score(dist: np.ndarray) -> int:
    return int(np.argmax(dist))


# name -> "module:Class"; imported only when chosen.
BACKENDS = {
    "rules": "mmssr_core.scoring.rules:RulesBackend",
    "transformers": "mmssr_core.scoring.transformers_backend:TransformersBackend",
    "vllm": "mmssr_core.scoring.vllm_backend:VLLMBackend",
    "openai": "mmssr_core.scoring.openai_backend:OpenAIBackend",
}


def get_backend(name: str, **options: Any) -> ScoringBackend:
    """Instantiate a backend by name, importing its module (and its heavy packages) only now."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
    module_name, cls_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)(**options)
