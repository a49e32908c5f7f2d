"""One recipe's subset from the store: read the pool-wide scores table (and the recipe's duplicate groups),
select, and commit the subset with its summary as one unit. The Dagster asset only reports on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from mmssr_core.recipes import Recipe
from mmssr_core.schema import (
    POOL_PARTITION,
    SCORES_TABLE,
    SELECTION_UNIT,
    SELECTIONS_TABLE,
)
from mmssr_core.store import Store, StoreError


@dataclass
class RecipeSelection:
    selection: Any  # mmssr_core.selection.result.Selection
    dedup: Any  # mmssr_core.dedup.budget.DedupOutcome, or None without deduplication
    summary: dict  # what `selections/<recipe>.json` holds
    pool_size: int
    path: Path


def select_recipe(store: Store, recipe: Recipe) -> RecipeSelection:
    """Select `recipe`'s subset and commit it; raises StoreError (a missing input) or SelectionInputError."""
    from mmssr_core.dedup.budget import select_deduplicated
    from mmssr_core.dedup.table import read_duplicates

    if not store.exists(SCORES_TABLE, POOL_PARTITION):
        raise StoreError("the scores table is missing: materialize scores_table (or run `mmssr scores`) first")
    scores = store.read(SCORES_TABLE, POOL_PARTITION)
    groups = read_duplicates(store, recipe.dedup, scores["source"].unique().to_list()) if recipe.dedup.enabled else None
    result, dedup = select_deduplicated(
        scores,
        [recipe.budget],
        groups,
        method=recipe.method,
        capabilities=list(recipe.capabilities) if recipe.capabilities else None,
        threshold=recipe.threshold,
        seed=recipe.seed,
        rank=recipe.rank,
    )
    sel = next(iter(result.values()))
    path = store.path(SELECTIONS_TABLE, recipe.name)
    summary = _summary(recipe, sel, dedup, scores, path)
    with store.transaction(SELECTION_UNIT, recipe.name) as tx:  # the subset and its summary land together
        tx.write(SELECTIONS_TABLE, sel.frame)
        tx.write_json(SELECTIONS_TABLE, summary)
    return RecipeSelection(sel, dedup, summary, scores.height, path)


def _summary(recipe: Recipe, sel, dedup, scores: pl.DataFrame, path: Path) -> dict:
    return {
        "recipe": recipe.to_dict(),
        "pool_size": scores.height,
        "requested": int(sel.requested),
        "selected": int(sel.selected),
        "short": bool(sel.short),
        "reason": sel.reason or "",
        "per_capability": {str(k): v for k, v in (sel.per_capability or {}).items()},
        "rank": sel.rank_mode,
        "rules": sel.rules,
        "path": str(path),
        "dedup": None if dedup is None else {"deduplicated_pool_size": dedup.deduplicated_size, **dedup.summary},
    }
