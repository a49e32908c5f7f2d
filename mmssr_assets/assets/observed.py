"""The graph's external inputs, observed: `source_folder` (per source) and `recipe` (per recipe).

Dagster does not write these; it observes them and records a data version per partition (a source
folder's file names, sizes and modification times; a recipe's definition). A new version marks the
partitions that read it stale (`raw_pool[<source>]`, `selected_subset[<recipe>]`), which is what the UI
shows and what the rescoring and refresh schedules act on. Observed by the first step of every
`ingest_and_score` / `select_and_report` run, by the sensors and schedules each tick, and by the UI's
*Observe* button (every registered partition at once).
"""

import dagster as dg

from mmssr_assets.freshness import DATA_VERSION_TAG
from mmssr_assets.partitions import (
    OWNERS,
    RECIPE_BACKFILL_POLICY,
    RECIPES,
    SOURCE_BACKFILL_POLICY,
    SOURCES,
    recipes_partitions,
    sources_partitions,
)
from mmssr_assets.resources import RecipesResource, SourcesResource, StoreResource
from mmssr_assets.versions import recipe_version

SOURCE_FOLDER = "source_folder"
RECIPE = "recipe"


def _observe(context, key: str, partitions_name: str, version_of, where: str):
    """One observation for the run's partition, or one per registered partition without one.
    `version_of(partition)` is None when the partition names nothing (anymore)."""
    if context.has_partition_key:
        version = version_of(context.partition_key)
        if version is None:
            raise dg.Failure(f"{key}[{context.partition_key}]: nothing of that name {where}")
        yield dg.ObserveResult(asset_key=key, data_version=dg.DataVersion(version), metadata={"version": version})
        return
    for partition in context.instance.get_dynamic_partitions(partitions_name):
        version = version_of(partition)
        if version is None:
            context.log.warning(f"{key}[{partition}]: nothing of that name {where}; not observed")
            continue
        context.log_event(
            dg.AssetObservation(
                asset_key=key, partition=partition, tags={DATA_VERSION_TAG: version}, metadata={"version": version}
            )
        )


@dg.multi_observable_source_asset(
    specs=[
        dg.AssetSpec(
            SOURCE_FOLDER,
            partitions_def=sources_partitions,
            group_name="ingestion",
            kinds={"folder"},
            owners=OWNERS,
            tags={"stage": "observe"},
            skippable=True,
            description=(
                "A source folder under the sources root (a pool file plus its images), observed, not written: "
                "its data version changes when a file is added, removed, resized or rewritten, which marks "
                "`raw_pool[<source>]` stale."
            ),
        )
    ],
    partitions_def=sources_partitions,
    name="observe_source_folder",
)
def observe_source_folder(context: dg.AssetExecutionContext, sources: SourcesResource):
    found = sources.discover()
    yield from _observe(
        context,
        SOURCE_FOLDER,
        SOURCES,
        lambda name: sources.fingerprint(name) if name in found else None,
        f"(no folder with a pool file) under {sources.path()}",
    )


@dg.multi_observable_source_asset(
    specs=[
        dg.AssetSpec(
            RECIPE,
            partitions_def=recipes_partitions,
            group_name="selection",
            kinds={"toml"},
            owners=OWNERS,
            tags={"stage": "observe"},
            skippable=True,
            description=(
                "A selection recipe (defaults, the store's recipes.toml, $MMSSR_RECIPES), observed: its data "
                "version is a hash of its definition, so editing a recipe marks `selected_subset[<recipe>]` stale."
            ),
        )
    ],
    partitions_def=recipes_partitions,
    name="observe_recipe",
)
def observe_recipe(context: dg.AssetExecutionContext, store: StoreResource, recipes: RecipesResource):
    known = {r.name: r for r in recipes.load(store.store().root)}
    yield from _observe(
        context,
        RECIPE,
        RECIPES,
        lambda name: recipe_version(known[name]) if name in known else None,
        f"among the recipes ({', '.join(known)})",
    )


# the same backfill policy as the assets they feed, so the jobs that start by observing them keep one
# policy (one run per source / recipe)
source_folder = observe_source_folder.with_attributes(backfill_policy=SOURCE_BACKFILL_POLICY)
recipe = observe_recipe.with_attributes(backfill_policy=RECIPE_BACKFILL_POLICY)
