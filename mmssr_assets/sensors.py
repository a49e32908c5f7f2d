"""Sensors: a new source folder or recipe becomes a partition and a run; a changed one is observed.

`new_sources_sensor` lists the sources root every 30 s: each new folder with a pool file becomes a
`sources` partition with one `ingest_and_score` run and its first observation; a registered folder whose
files changed gets a new observed data version (`source_folder[<source>]`), so the UI marks its `raw_pool` stale at once, and the
rescoring schedule runs it. Folders that did not change are left alone, so adding the 11th domain never
touches the other ten. `new_recipes_sensor` does the same for recipes (`recipe[<name>]`,
`select_and_report`).
"""

import os

import dagster as dg

from mmssr_assets.assets.observed import RECIPE, SOURCE_FOLDER
from mmssr_assets.freshness import changed_observations
from mmssr_assets.jobs import ingest_and_score_job, select_and_report_job
from mmssr_assets.partitions import RECIPES, SOURCES, recipes_partitions, sources_partitions
from mmssr_assets.resources import RecipesResource, SourcesResource, StoreResource
from mmssr_assets.versions import recipe_version

ENV_AUTOMATION = "MMSSR_AUTOMATION"  # "on": sensors and schedules start running with the code location


def default_status() -> dg.DefaultSensorStatus:
    on = os.environ.get(ENV_AUTOMATION, "").lower() in ("1", "on", "true", "yes")
    return dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED


def new_sources(found: dict, known: set[str]) -> list[str]:
    return sorted(s for s in found if s not in known)


def _result(new: list[str], requests: list, add, observed: list, what: str) -> dg.SensorResult | dg.SkipReason:
    if not new and not observed:
        return dg.SkipReason(f"no new or changed {what}")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[add.build_add_request(new)] if new else [],
        asset_events=observed,
    )


@dg.sensor(
    job=ingest_and_score_job,
    minimum_interval_seconds=30,
    default_status=default_status(),
    description="Adds a `sources` partition and requests an ingest_and_score run for each new source folder; "
    "observes changed folders (their raw_pool turns stale).",
)
def new_sources_sensor(context: dg.SensorEvaluationContext, sources: SourcesResource):
    root = sources.path()
    if not root.is_dir():
        return dg.SkipReason(f"sources root {root} does not exist")
    found = sources.discover()
    known = set(context.instance.get_dynamic_partitions(SOURCES))
    new = new_sources(found, known)
    versions = {s: sources.fingerprint(s) for s in found}
    # new folders are observed too: an asset materialized before its input was ever observed could not be
    # told stale later (Dagster compares observations recorded after the one it read)
    observed = changed_observations(context.instance, SOURCE_FOLDER, versions)
    if new:
        context.log.info(f"new sources under {root}: {', '.join(new)}")
    requests = [
        dg.RunRequest(partition_key=s, run_key=f"new-source:{s}:{versions[s]}", tags={"mmssr/trigger": "new_source"})
        for s in new
    ]
    return _result(new, requests, sources_partitions, observed, f"source folder under {root}")


@dg.sensor(
    job=select_and_report_job,
    minimum_interval_seconds=30,
    default_status=default_status(),
    description="Adds a `recipes` partition for each new recipe (and a select_and_report run once scores exist); "
    "observes edited recipes (their selected_subset turns stale).",
)
def new_recipes_sensor(context: dg.SensorEvaluationContext, store: StoreResource, recipes: RecipesResource):
    from mmssr_core.recipes import RecipeError

    try:
        defined = {r.name: recipe_version(r) for r in recipes.load(store.store().root)}
    except RecipeError as exc:
        return dg.SkipReason(f"recipes cannot be read: {exc}")
    known = set(context.instance.get_dynamic_partitions(RECIPES))
    new = sorted(n for n in defined if n not in known)
    observed = changed_observations(context.instance, RECIPE, defined)
    scored = context.instance.get_latest_materialization_event(dg.AssetKey("capability_scores")) is not None
    requests = (
        [
            dg.RunRequest(partition_key=n, run_key=f"new-recipe:{n}:{defined[n]}", tags={"mmssr/trigger": "new_recipe"})
            for n in new
        ]
        if scored
        else []
    )
    return _result(new, requests, recipes_partitions, observed, "recipe")
