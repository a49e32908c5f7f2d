"""Scoring backends (rules, transformers, vllm, openai) behind one protocol, plus cache and runner.

Backends are imported lazily by `get_backend`, so the base install needs none of their packages.
"""

from mmssr_core.scoring.base import (  # noqa: F401
    Failure,
    ScoreRequest,
    ScorerIdentity,
    ScoringBackend,
    get_backend,
)
