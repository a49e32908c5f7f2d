"""Selection on the deduplicated pool, with budgets measured against the pool as ingested.

A recipe's 10% stays 10% of the scored pool even when duplicates shrink the candidates: the count is
fixed first (floor(r * pool)), then selection runs on one sample per duplicate group. When the
deduplicated pool holds fewer samples than the count, the subset is short and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import polars as pl

from mmssr_core.dedup.representatives import deduplicate_scores
from mmssr_core.dedup.summary import removal_summary


@dataclass
class DedupOutcome:
    pool_size: int  # scored samples, as ingested
    deduplicated_size: int
    summary: dict = field(default_factory=dict)  # groups, removed, per source, examples
    ranked: pl.DataFrame | None = None  # members of every group, best first, `keep` on the representative


def select_deduplicated(scores: pl.DataFrame, budgets: list, groups: pl.DataFrame | None, *,
                        capabilities: list[str] | None = None, seed: int = 0, **select_kwargs):
    """`mmssr_core.selection.select` on one sample per duplicate group -> (results, DedupOutcome | None).

    Results are keyed by the budgets as given; `groups` None selects from the pool as it is.
    """
    from mmssr_core.selection import SelectionInputError, budget_key, parse_budget, select

    if groups is None:
        return select(scores, budgets, capabilities=capabilities, seed=seed, **select_kwargs), None
    missing = [c for c in ("source", "id", "group", "kind") if c not in groups.columns]
    if missing:
        raise SelectionInputError(f"the duplicate groups lack columns {missing} (write them with `mmssr dedup`)")
    if isinstance(budgets, (str, int, float)):
        budgets = [budgets]
    counts = {budget_key(b): parse_budget(b, scores.height) for b in budgets}
    candidates, ranked = deduplicate_scores(scores, groups, capabilities, seed)
    outcome = DedupOutcome(scores.height, candidates.height, removal_summary(ranked), ranked)
    if candidates.height == 0:
        return select(candidates, budgets, capabilities=capabilities, seed=seed, **select_kwargs), outcome
    clamped = {k: min(n, candidates.height) for k, n in counts.items()}
    raw = select(candidates, sorted(set(clamped.values()), reverse=True), capabilities=capabilities, seed=seed,
                 **select_kwargs)
    results = {}
    for key, n in counts.items():
        sel = raw[budget_key(clamped[key])]
        short, reason = sel.short, sel.reason
        if clamped[key] < n:
            short = True
            reason = (f"the deduplicated pool holds {candidates.height:,} samples, fewer than the budget's {n:,} "
                      f"({scores.height - candidates.height:,} duplicates removed)")
        results[key] = replace(sel, budget=key, requested=n, short=short, reason=reason)
    return results, outcome
