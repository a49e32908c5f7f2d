"""`eval_report`: what one recipe's subset holds against the pool and a random subset of the same size."""

import dagster as dg

from mmssr_assets.assets.selection import scores_table, selected_subset
from mmssr_assets.metadata import scores_scorer_metadata, table
from mmssr_assets.partitions import OWNERS, RECIPE_BACKFILL_POLICY, recipes_partitions
from mmssr_assets.resources import RecipesResource, ScorerResource, StoreResource
from mmssr_assets.versions import source_code_version

_KINDS = {
    "md": dg.MetadataValue.md,
    "path": lambda v: dg.MetadataValue.path(str(v)),
    "float": dg.MetadataValue.float,
    "int": dg.MetadataValue.int,
    "json": dg.MetadataValue.json,
}


def headline_table(summary: dict) -> dg.MetadataValue:
    """The report's headline (one row per subset, one column per metric) as a typed table."""
    from mmssr_core.report_tables import headline

    t = headline(summary)
    columns = [(t.header[0], "string")] + [(h, "float") for h in t.header[1:]]
    rows = [[r[0], *(None if v is None else float(v) for v in r[1:])] for r in t.rows]
    return table(columns, rows)


@dg.asset(
    partitions_def=recipes_partitions,
    backfill_policy=RECIPE_BACKFILL_POLICY,
    deps=[selected_subset, scores_table],
    code_version=source_code_version(
        "mmssr_core.report",
        "mmssr_core.report_inputs",
        "mmssr_core.report_metrics",
        "mmssr_core.report_plots",
        "mmssr_core.report_html",
        "mmssr_core.report_tables",
    ),
    group_name="reports",
    kinds={"html", "json"},
    owners=OWNERS,
    tags={"stage": "report"},
    description=(
        "The eval report of one recipe: per-capability scores of the subset against the pool and a "
        "seeded random subset of the same size, as `reports/<recipe>.html` and `.json`. Its metadata "
        "names the scorer the scores came from."
    ),
)
def eval_report(
    context: dg.AssetExecutionContext, store: StoreResource, scorer: ScorerResource, recipes: RecipesResource
) -> dg.MaterializeResult:
    from mmssr_core import report_metrics as M
    from mmssr_core.report_inputs import ReportInputsError, gather_report_inputs

    st = store.store()
    recipe = recipes.get(context.partition_key, st.root)
    try:
        inputs = gather_report_inputs(st, recipe.name, recipe=recipe)
    except ReportInputsError as exc:
        raise dg.Failure(f"{exc} (materialize selected_subset first)") from None
    result = inputs.build(st, taxonomy=scorer.taxonomy())
    scores = inputs.scores
    meta: dict = {
        "selected": inputs.selection.height,
        "rank": recipe.rank,
        "pool_passing_rule": M.passing_label(result.summary["threshold"]),
        "headline": headline_table(result.summary),
        **scores_scorer_metadata(scores["scorer"].unique().to_list() if "scorer" in scores.columns else []),
    }
    for name, kind, value in result.metadata_entries():
        meta[name] = _KINDS[kind](value)
    return dg.MaterializeResult(metadata=meta)
