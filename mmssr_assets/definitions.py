"""The code location: `dagster dev` (workspace.yaml) and `mmssr materialize` load the same graph.

    raw_pool ──► capability_scores ─┐                  ┌─► duplicates ─► selected_subset ──► eval_report
             └─► style_labels ──────┴─► scores_table ──┤                       └─► downstream_run ─► downstream_eval
    (per source: dynamic partitions)     (pool-wide)   └─► scorer_agreement   (pool-wide; then per recipe)
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from mmssr_assets.assets.agreement import scorer_agreement
from mmssr_assets.assets.dedup import build_duplicates
from mmssr_assets.assets.downstream import DownstreamResource, build_downstream_assets
from mmssr_assets.assets.ingest import raw_pool
from mmssr_assets.assets.reports import build_eval_report
from mmssr_assets.assets.scoring import score_source_step
from mmssr_assets.assets.selection import build_selected_subset, scores_table
from mmssr_assets.checks import SOURCE_CHECKS, build_recipe_checks
from mmssr_assets.executors import build_executor
from mmssr_assets.jobs import ingest_and_score_job, select_and_report_job
from mmssr_assets.resources import ScorerResource, SourcesResource, StoreResource, default_scorer
from mmssr_assets.schedules import build_refresh_schedule, rescore_changed_sources
from mmssr_assets.sensors import new_sources_sensor
from mmssr_core.recipes import Recipe, load_recipes
from mmssr_core.store import default_store_root


def build_definitions(
    *,
    store_root: str | os.PathLike | None = None,
    sources_root: str | os.PathLike | None = None,
    scorer: ScorerResource | None = None,
    recipes: list[Recipe] | None = None,
) -> dg.Definitions:
    """The whole graph; unset arguments come from the environment ($MMSSR_STORE, $MMSSR_SOURCES_ROOT,
    $MMSSR_BACKEND..., recipes from the store's recipes.toml and $MMSSR_RECIPES)."""
    store_root = Path(store_root).resolve() if store_root else None
    if recipes is None:
        recipes = load_recipes(store_root=store_root or default_store_root())
    selected_subset = build_selected_subset(recipes)
    eval_report = build_eval_report(recipes, selected_subset)
    return dg.Definitions(
        assets=[
            raw_pool,
            score_source_step,
            scores_table,
            build_duplicates(recipes),
            selected_subset,
            eval_report,
            scorer_agreement,
            # train-and-evaluate: in no job or schedule (a run trains a model); materialize by hand
            *build_downstream_assets(recipes, selected_subset),
        ],
        asset_checks=[*SOURCE_CHECKS, *build_recipe_checks(recipes)],
        jobs=[ingest_and_score_job, select_and_report_job],
        sensors=[new_sources_sensor],
        schedules=[rescore_changed_sources, build_refresh_schedule(recipes, select_and_report_job)],
        executor=build_executor(),  # $MMSSR_EXECUTOR: in_process | multiprocess | celery | k8s
        resources={
            "store": StoreResource(root=str(store_root) if store_root else None),
            "sources": SourcesResource(root=str(Path(sources_root).resolve()) if sources_root else None),
            "scorer": scorer or default_scorer(),
            "downstream": DownstreamResource(),
        },
    )


defs = build_definitions()
