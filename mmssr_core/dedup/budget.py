"""Selection on the deduplicated pool, with budgets measured against the pool as ingested.

A recipe's 10% stays 10% of the scored pool even when duplicates shrink the candidates: the count is
fixed first (floor(r * pool)), then selection runs on one sample per duplicate group. When the
deduplicated pool holds fewer samples than the count, the subset is short and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from mmssr_core.dedup.representatives import deduplicate_scores
from mmssr_core.dedup.summary import removal_summary


@dataclass
class DedupOutcome:
    pool_size: int  # scored samples, as ingested
    deduplicated_size: int
    summary: dict = field(default_factory=dict)  # groups, removed, per source, examples
    ranked: pl.DataFrame | None = None  # members of every group, best first, `keep` on the representative


def select_deduplicated(
    scores: pl.DataFrame,
    budgets: list,
    groups: pl.DataFrame | None,
    *,
    capabilities: list[str] | None = None,
    seed: int = 0,
    **select_kwargs,
):
    """`mmssr_core.selection.select` on one sample per duplicate group -> (results, DedupOutcome | None).

    Results are keyed by the budgets as given; `groups` None selects from the pool as it is.
    """
    from mmssr_core.selection import SelectionInputError, parse_budget, select

    if groups is None:
        return select(scores, budgets, capabilities=capabilities, seed=seed, **select_kwargs), None
    missing = [c for c in ("source", "id", "group", "kind") if c not in groups.columns]
    if missing:
        raise SelectionInputError(f"the duplicate groups lack columns {missing} (write them with `mmssr dedup`)")
    budgets = [budgets] if isinstance(budgets, (str, int, float)) else list(budgets)
    for b in budgets:  # a count above the pool is an error, as without deduplication
        n = parse_budget(b).size(scores.height)
        if n > scores.height:
            raise SelectionInputError(
                f"budget {parse_budget(b).key!r} asks for {n} samples but the scores table "
                f"has only {scores.height} rows"
            )
    candidates, ranked = deduplicate_scores(scores, groups, capabilities, seed)
    outcome = DedupOutcome(scores.height, candidates.height, removal_summary(ranked), ranked)
    results = select(
        candidates, budgets, capabilities=capabilities, seed=seed, pool_size=scores.height, **select_kwargs
    )
    return results, outcome
