"""Partition sets of the graph.

`sources`: one partition per source folder under the sources root, added at run time (by the sensor,
the materialize command or the UI), so a new domain never changes code.
`recipes`: one partition per selection recipe, read from the recipe config when the code location
loads (defaults + the store's `recipes.toml` + $MMSSR_RECIPES); reload the code location after
editing recipes.
"""

from __future__ import annotations

import warnings

import dagster as dg

from mmssr_core.recipes import Recipe, load_recipes

SOURCES = "sources"

# backfill_policy on @asset is marked beta in 1.13; we rely on it deliberately (see SOURCE_BACKFILL_POLICY).
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=dg.BetaWarning)
# Partitioned asset checks (one result per source / recipe) are "preview" in 1.13; used on purpose.
warnings.filterwarnings("ignore", message=r"Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

sources_partitions = dg.DynamicPartitionsDefinition(name=SOURCES)


def recipes_partitions(recipes: list[Recipe]) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([r.name for r in recipes])


def current_recipes(store_root=None) -> list[Recipe]:
    return load_recipes(store_root=store_root)


# One policy for every per-source asset: a backfill of N sources launches N runs, each carrying the
# whole chain (raw_pool -> capability_scores + style_labels) for one source, so the chain is never split
# into runs of different shapes and one failing source does not fail the others.
SOURCE_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(1)
RECIPE_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(1)

# The concurrency pool of the scoring steps: on a GPU machine, scoring steps of concurrent runs queue
# for its slots (dagster.yaml: concurrency.pools.default_limit; per pool: `dagster instance concurrency
# set gpu N`).
GPU_POOL = "gpu"
OWNERS = ["team:mmssr"]
