"""Everything an eval report needs, gathered from a store in one place.

The Dagster asset and `mmssr report` both call `gather_report_inputs`, so one store gives one report
whichever way it is asked for: the scores table, the recipe's selection and what selection recorded beside
it (the recipe's settings, its rank mode, the duplicates it left out), the raw pool of the scored sources
and their scoring failures. Who made the scores travels in the scores table's `scorer` column and is
summarised by the report itself. Inputs given as frames (the CLI's files) are used instead of the store's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import polars as pl

from mmssr_core.schema import (
    FAILURE_TABLE,
    RAW_POOL_TABLE,
    SCORES_PARTITION,
    SCORES_TABLE,
    SELECTIONS_TABLE,
)
from mmssr_core.selection.rules import DEFAULT_RANK
from mmssr_core.store import Store


class ReportInputsError(ValueError):
    """The store lacks what a report needs (no scores table, no selection for the recipe)."""


@dataclass
class ReportInputs:
    recipe_name: str
    selection: pl.DataFrame
    scores: pl.DataFrame
    pool: pl.DataFrame | None = None  # raw_pool of every scored source, or None when one is missing
    failures: pl.DataFrame | None = None  # score_failures of the scored sources
    dedup: dict | None = None  # the duplicates summary selection recorded
    recipe: dict | None = None  # the recipe's settings (Recipe.to_dict()), when known
    seed: int = 0
    budget: float | int | None = None
    threshold: float = 0.0
    rank: str = DEFAULT_RANK
    capabilities: list[str] | None = None
    baselines: dict[str, pl.DataFrame] = field(default_factory=dict)
    budget_selections: dict[str, pl.DataFrame] = field(default_factory=dict)

    def with_options(self, **changes) -> ReportInputs:
        """A copy with the given settings replaced; None values leave a setting as gathered."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def build(self, store, *, taxonomy=None, **options):
        """`report.build_report` on these inputs, writing under `store` (options: examples_per_style,
        make_plots, make_html)."""
        from mmssr_core.report import build_report

        return build_report(
            store,
            self.recipe_name,
            self.selection,
            self.scores,
            pool=self.pool,
            seed=self.seed,
            budget=self.budget,
            threshold=self.threshold,
            rank=self.rank,
            capabilities=self.capabilities,
            taxonomy=taxonomy,
            failures=self.failures,
            baselines=self.baselines or None,
            budget_selections=self.budget_selections or None,
            recipe=self.recipe,
            dedup=self.dedup,
            **options,
        )


def gather_report_inputs(
    store: Store,
    recipe_name: str,
    *,
    recipe=None,
    scores: pl.DataFrame | None = None,
    selection: pl.DataFrame | None = None,
    pool: pl.DataFrame | None = None,
    failures: pl.DataFrame | None = None,
) -> ReportInputs:
    """The inputs of `recipe_name`'s report from `store`, each frame given here taking the store's place.

    recipe: a `recipes.Recipe` (or its dict); without it, the recipe recorded beside the selection
    (`selections/<recipe>.json`) gives the seed, budget, threshold, rank mode and capabilities.
    """
    if scores is None:
        if not store.exists(SCORES_TABLE, SCORES_PARTITION):
            raise ReportInputsError(f"no scores table in {store.root}: score and build it first")
        scores = store.read(SCORES_TABLE, SCORES_PARTITION)
    if selection is None:
        if not store.exists(SELECTIONS_TABLE, recipe_name):
            raise ReportInputsError(f"no selection for recipe {recipe_name!r} in {store.root}: select first")
        selection = store.read(SELECTIONS_TABLE, recipe_name)
    recorded = selection_record(store, recipe_name)
    settings = recipe.to_dict() if hasattr(recipe, "to_dict") else (recipe or recorded.get("recipe"))
    sources = sorted(scores["source"].unique().to_list()) if "source" in scores.columns else []
    return ReportInputs(
        recipe_name=recipe_name,
        selection=selection,
        scores=scores,
        pool=pool if pool is not None else scored_pool(store, sources),
        failures=failures if failures is not None else scoring_failures(store, sources),
        dedup=recorded.get("dedup"),
        recipe=settings,
        **_settings(settings, recorded),
    )


def selection_record(store: Store, recipe_name: str) -> dict:
    """What selection wrote beside the subset (`selections/<recipe>.json`), or {} when there is none."""
    if not store.path(SELECTIONS_TABLE, recipe_name, ".json").exists():
        return {}
    return store.read_json(SELECTIONS_TABLE, recipe_name)


def scored_pool(store: Store, sources: list[str]) -> pl.DataFrame | None:
    """The raw pool of every scored source; None unless each has one (a partial pool would skew the text
    and image statistics of the pool against the subsets)."""
    have = [s for s in sources if store.exists(RAW_POOL_TABLE, s)]
    return store.scan(RAW_POOL_TABLE, have).collect() if have and len(have) == len(sources) else None


def scoring_failures(store: Store, sources: list[str]) -> pl.DataFrame | None:
    """score_failures of the scored sources (failures of a source no longer in the pool do not count)."""
    have = [s for s in sources if store.exists(FAILURE_TABLE, s)]
    return store.scan(FAILURE_TABLE, have).collect() if have else None


def _settings(recipe: dict | None, recorded: dict) -> dict:
    r = recipe or {}
    caps = r.get("capabilities")
    return {
        "seed": int(r.get("seed") or 0),
        "budget": r.get("budget"),
        "threshold": float(r.get("threshold") or 0.0),
        "rank": r.get("rank") or recorded.get("rank") or DEFAULT_RANK,
        "capabilities": list(caps) if caps else None,
    }
