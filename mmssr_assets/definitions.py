"""The code location: `dagster dev` / `dg dev` (workspace.yaml, pyproject's [tool.dg]) and `mmssr materialize`
load the same graph.

    source_folder ─► raw_pool ─► capability_scores ─┐               ┌─► duplicates ─┐
    (observed)                └► style_labels ──────┴─► scores_table ┤               ├─► selected_subset ─► eval_report
                                                                     └─► scorer_agreement      ▲
    (per source: dynamic partitions)                    (pool-wide)          recipe (observed) ┘ (per recipe)

Loading it reads the environment only (never the store): source and recipe partitions are dynamic.
The train-and-evaluate assets join when $MMSSR_DOWNSTREAM=on (they train a model; the demo never runs them).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from mmssr_assets.assets.agreement import scorer_agreement
from mmssr_assets.assets.dedup import duplicates
from mmssr_assets.assets.downstream import DownstreamResource, build_downstream_assets
from mmssr_assets.assets.ingest import raw_pool
from mmssr_assets.assets.observed import recipe, source_folder
from mmssr_assets.assets.reports import eval_report
from mmssr_assets.assets.scoring import build_score_source
from mmssr_assets.assets.selection import scores_table, selected_subset
from mmssr_assets.checks import RECIPE_CHECKS, SOURCE_CHECKS
from mmssr_assets.executors import build_executor
from mmssr_assets.jobs import ingest_and_score_job, select_and_report_job
from mmssr_assets.resources import RecipesResource, ScorerResource, SourcesResource, StoreResource, default_scorer
from mmssr_assets.schedules import refresh_selections, rescore_changed_sources
from mmssr_assets.sensors import new_recipes_sensor, new_sources_sensor
from mmssr_core.recipes import Recipe

ENV_DOWNSTREAM = "MMSSR_DOWNSTREAM"  # "on": add the train-and-evaluate assets to the graph


def downstream_enabled() -> bool:
    return os.environ.get(ENV_DOWNSTREAM, "").lower() in ("1", "on", "true", "yes")


def build_definitions(
    *,
    store_root: str | os.PathLike | None = None,
    sources_root: str | os.PathLike | None = None,
    scorer: ScorerResource | None = None,
    recipes: list[Recipe] | None = None,
    downstream: bool | None = None,
) -> dg.Definitions:
    """The whole graph; unset arguments come from the environment ($MMSSR_STORE, $MMSSR_SOURCES_ROOT,
    $MMSSR_BACKEND..., $MMSSR_DOWNSTREAM). `recipes` fixes the recipe list; by default recipes are read
    from the store's recipes.toml and $MMSSR_RECIPES when a run or a tick needs them."""
    scorer = scorer or default_scorer()
    downstream = downstream_enabled() if downstream is None else downstream
    return dg.Definitions(
        assets=[
            source_folder,
            raw_pool,
            build_score_source(scorer),  # its code version is this scorer's identity
            scores_table,
            duplicates,
            recipe,
            selected_subset,
            eval_report,
            scorer_agreement,
            *(build_downstream_assets() if downstream else []),
        ],
        asset_checks=[*SOURCE_CHECKS, *RECIPE_CHECKS],
        jobs=[ingest_and_score_job, select_and_report_job],
        sensors=[new_sources_sensor, new_recipes_sensor],
        schedules=[rescore_changed_sources, refresh_selections],
        executor=build_executor(),  # $MMSSR_EXECUTOR: in_process | multiprocess | celery | k8s
        resources={
            "store": StoreResource(root=str(Path(store_root).resolve()) if store_root else None),
            "sources": SourcesResource(root=str(Path(sources_root).resolve()) if sources_root else None),
            "scorer": scorer,
            "recipes": RecipesResource.of(recipes),
            "downstream": DownstreamResource(),
        },
    )


defs = build_definitions()
