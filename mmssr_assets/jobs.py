"""Asset jobs (partitioning is inferred from the selected assets): the per-source chain and the per-recipe
chain (what sensors, schedules and the materialize command launch). Each starts by observing its external
input (`source_folder`, `recipe`), so the data versions it records are the ones it read."""

from __future__ import annotations

import dagster as dg

INGEST_AND_SCORE = "ingest_and_score"
SELECT_AND_REPORT = "select_and_report"

SOURCE_ASSET_KEYS = ("raw_pool", "capability_scores", "style_labels")
RECIPE_ASSET_KEYS = ("selected_subset", "eval_report")
POOL_ASSET_KEYS = ("scores_table", "duplicates")
SOURCE_ASSETS = dg.AssetSelection.assets("source_folder", *SOURCE_ASSET_KEYS)
RECIPE_ASSETS = dg.AssetSelection.assets("recipe", *POOL_ASSET_KEYS, *RECIPE_ASSET_KEYS)

# Asset selections include the assets' checks, so every run of these jobs runs the blocking checks.
ingest_and_score_job = dg.define_asset_job(
    INGEST_AND_SCORE,
    selection=SOURCE_ASSETS,
    description="Observe one source folder, ingest and score it (capabilities + styles), with the source checks.",
)


select_and_report_job = dg.define_asset_job(
    SELECT_AND_REPORT,
    selection=RECIPE_ASSETS,
    description="Observe one recipe, rebuild the pool-wide scores table and duplicate groups, then select and "
    "report that recipe.",
)
