"""Partition sets of the graph.

`sources`: one partition per source folder under the sources root, added at run time (by the sensor,
the rescoring schedule, the materialize command or the UI), so a new domain never changes code.
`recipes`: one partition per selection recipe (defaults + the store's `recipes.toml` + $MMSSR_RECIPES),
added the same way. Both are dynamic, so loading the definitions never reads the store: recipes are read
when a run, a sensor tick or a schedule tick needs them.
"""

from __future__ import annotations

import dagster as dg

from mmssr_assets.known_warnings import install as _install_warning_filters

_install_warning_filters()  # before any asset, check or observation below or in the modules importing this one

SOURCES = "sources"
RECIPES = "recipes"

sources_partitions = dg.DynamicPartitionsDefinition(name=SOURCES)
recipes_partitions = dg.DynamicPartitionsDefinition(name=RECIPES)

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
