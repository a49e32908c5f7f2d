"""Asset jobs (partitioning is inferred from the selected assets): the per-source chain and the per-recipe chain (what sensors, schedules and the
materialize command launch)."""

from __future__ import annotations

import dagster as dg


INGEST_AND_SCORE = "ingest_and_score"
SELECT_AND_REPORT = "select_and_report"

SOURCE_ASSETS = dg.AssetSelection.assets("raw_pool", "capability_scores", "style_labels")
RECIPE_ASSETS = dg.AssetSelection.assets("scores_table", "duplicates", "selected_subset", "eval_report")

# Asset selections include the assets' checks, so every run of these jobs runs the blocking checks.
ingest_and_score_job = dg.define_asset_job(
    INGEST_AND_SCORE,
    selection=SOURCE_ASSETS,
    description="Ingest one source folder and score it (capabilities + styles), with the source checks.",
)


select_and_report_job = dg.define_asset_job(
    SELECT_AND_REPORT,
    selection=RECIPE_ASSETS,
    description="Rebuild the pool-wide scores table and duplicate groups, then select and report one recipe.",
)
