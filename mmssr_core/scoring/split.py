"""Scoring a source with one backend, or with two: capabilities from one, styles from another.

Why two: a model scorer and a cheap styler (e.g. the `rules` backend) can be combined, or the styler of
another checkpoint. Each backend keeps its own cache (its own identity); the per-source tables are written
by each run for its target group, and the result reported is the merge of both runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmssr_core.scoring.base import ScoringBackend
from mmssr_core.scoring.runner import TARGET_GROUPS, ScoreRunResult, score_source
from mmssr_core.store import Store


def score_source_split(
    store: Store,
    source: str,
    backend: ScoringBackend,
    styles_backend: ScoringBackend | None = None,
    *,
    targets: Sequence[str] = TARGET_GROUPS,
    **options: Any,
) -> ScoreRunResult:
    """`score_source` with `backend` for every target, or, with `styles_backend`, the capabilities from
    `backend` and the styles from `styles_backend`. `options` are `score_source`'s keyword arguments.
    The caller owns (and closes) both backends."""
    wanted = tuple(t for t in TARGET_GROUPS if t in targets)
    if styles_backend is None or "styles" not in wanted:
        return score_source(store, source, backend, targets=wanted or tuple(targets), **options)
    if "capabilities" not in wanted:
        return score_source(store, source, styles_backend, targets=("styles",), **options)
    scored = score_source(store, source, backend, targets=("capabilities",), **options)
    styled = score_source(store, source, styles_backend, targets=("styles",), **options)
    return merge_results(scored, styled)


def merge_results(capabilities: ScoreRunResult, styles: ScoreRunResult) -> ScoreRunResult:
    """One result for a source scored by two backends: counts of the capability run, the larger number of
    failed samples, both identities and every failure reason."""
    reasons = dict(capabilities.failures_by_reason)
    for reason, n in styles.failures_by_reason.items():
        reasons[reason] = reasons.get(reason, 0) + n
    return ScoreRunResult(
        source=capabilities.source,
        scored=capabilities.scored,
        cached=capabilities.cached,
        failed=max(capabilities.failed, styles.failed),
        seconds=round(capabilities.seconds + styles.seconds, 3),
        identity=f"{capabilities.identity} + styles:{styles.identity}",
        total=capabilities.total,
        computed=capabilities.computed,
        digest=capabilities.digest,
        targets=TARGET_GROUPS,
        failures_by_reason=reasons,
    )
