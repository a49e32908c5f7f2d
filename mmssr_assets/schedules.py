"""Schedules: rescore what Dagster reports stale, then refresh what the new scores make stale.

Both read Dagster's own stale status (`mmssr_assets.freshness`), the one the UI shows, after recording
fresh observations of their external inputs:

- `rescore_changed_sources` observes every registered source folder, then requests an `ingest_and_score`
  run for each source whose raw_pool, capability_scores or style_labels is missing or stale: the folder
  changed (`source_folder` has a new data version), the ingestion code changed, or the scorer changed
  (the scoring step's code version is the scorer identity). The score cache then sends only new or
  changed samples to the backend.
- `refresh_selections` registers new recipes, observes every recipe, then requests a `select_and_report`
  run for each recipe whose selection or report is missing or stale, or every recipe when the pool-wide
  tables are (the scores table's data version combines every source's score versions, compared here at
  any number of sources).

Explicit schedules rather than `AutomationCondition.eager()`, which never fills partitions that existed
before the condition was added.
"""

import dagster as dg

from mmssr_assets.assets.observed import RECIPE, SOURCE_FOLDER
from mmssr_assets.assets.selection import pool_scores_version, registered_scored_sources
from mmssr_assets.freshness import Freshness, changed_observations, report
from mmssr_assets.jobs import (
    POOL_ASSET_KEYS,
    RECIPE_ASSET_KEYS,
    SOURCE_ASSET_KEYS,
    ingest_and_score_job,
    select_and_report_job,
)
from mmssr_assets.partitions import RECIPES, SOURCES
from mmssr_assets.resources import RecipesResource, SourcesResource, StoreResource
from mmssr_assets.sensors import default_status
from mmssr_assets.versions import recipe_version

RESCORE_CRON = "0 2 * * *"
REFRESH_CRON = "0 4 * * *"


def _status() -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus(default_status().value)


def _scorer_version(context) -> str:
    return context.repository_def.asset_graph.get(dg.AssetKey("capability_scores")).code_version or ""


@dg.schedule(
    cron_schedule=RESCORE_CRON,
    job=ingest_and_score_job,
    default_status=_status(),
    description="Observes every source folder, then re-ingests and rescores each source Dagster reports "
    "stale or missing (changed folder, ingestion code or scorer).",
)
def rescore_changed_sources(context: dg.ScheduleEvaluationContext, sources: SourcesResource):
    found = sources.discover()
    present = [s for s in context.instance.get_dynamic_partitions(SOURCES) if s in found]  # folder gone: skip
    versions = {s: sources.fingerprint(s) for s in present}
    report(context.instance, changed_observations(context.instance, SOURCE_FOLDER, versions))
    fresh = Freshness.of(context)
    due = {s: why for s in sorted(present) if (why := fresh.due(SOURCE_ASSET_KEYS, s))}
    if not due:
        return dg.SkipReason(f"all {len(present)} sources are fresh")
    scorer = _scorer_version(context)
    return [
        dg.RunRequest(
            partition_key=s,
            run_key=f"rescore:{s}:{versions[s]}:{scorer}",
            tags={"mmssr/trigger": "rescore", "mmssr/reason": why},
        )
        for s, why in due.items()
    ]


def stale_recipes(context, st, recipes: dict[str, str]) -> dict[str, str]:
    """Recipes whose selection or report needs a run, with why (every one when the pool tables do)."""
    fresh = Freshness.of(context)
    pool_due = fresh.due(POOL_ASSET_KEYS)
    if pool_due is None:
        scored = registered_scored_sources(context.instance, st)
        if pool_scores_version(context.instance, scored) != fresh.data_version("scores_table"):
            pool_due = "scores_table: a source's scores have a new data version"
    return {n: why for n in recipes if (why := pool_due or fresh.due(RECIPE_ASSET_KEYS, n))}


@dg.schedule(
    cron_schedule=REFRESH_CRON,
    job=select_and_report_job,
    default_status=_status(),
    description="Registers and observes the recipes, then re-selects and re-reports each recipe Dagster "
    "reports stale or missing (new scores, an edited recipe).",
)
def refresh_selections(context: dg.ScheduleEvaluationContext, store: StoreResource, recipes: RecipesResource):
    from mmssr_core.recipes import RecipeError

    st = store.store()
    if not registered_scored_sources(context.instance, st):
        return dg.SkipReason("no scored source yet")
    try:
        defined = {r.name: recipe_version(r) for r in recipes.load(st.root)}
    except RecipeError as exc:
        return dg.SkipReason(f"recipes cannot be read: {exc}")
    registered = set(context.instance.get_dynamic_partitions(RECIPES))
    new = [n for n in defined if n not in registered]
    if new:
        context.instance.add_dynamic_partitions(RECIPES, new)
    report(context.instance, changed_observations(context.instance, RECIPE, defined))
    due = stale_recipes(context, st, defined)
    if not due:
        return dg.SkipReason(f"every selection and report of {len(defined)} recipes is fresh")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "now"
    return [
        dg.RunRequest(
            partition_key=n, run_key=f"refresh:{n}:{day}", tags={"mmssr/trigger": "refresh", "mmssr/reason": why}
        )
        for n, why in due.items()
    ]
