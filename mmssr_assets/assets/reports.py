"""`eval_report`: what one recipe's subset holds against the pool and a random subset of the same size."""


import dagster as dg

from mmssr_assets.assets.selection import SCORES_PARTITION, scores_table, selected_subset
from mmssr_assets.metadata import scores_scorer_metadata, table
from mmssr_assets.partitions import OWNERS, RECIPE_BACKFILL_POLICY, recipes_partitions
from mmssr_assets.resources import RecipesResource, ScorerResource, StoreResource
from mmssr_assets.versions import source_code_version
from mmssr_core.schema import FAILURE_TABLE, RAW_POOL_TABLE, SCORES_TABLE, SELECTIONS_TABLE

_KINDS = {
    "md": dg.MetadataValue.md,
    "path": lambda v: dg.MetadataValue.path(str(v)),
    "float": dg.MetadataValue.float,
    "int": dg.MetadataValue.int,
    "json": dg.MetadataValue.json,
}


def headline_table(summary: dict) -> dg.MetadataValue:
    """The report's headline (one row per metric, one column per subset) as a typed table."""
    from mmssr_core.report import _headline  # the rows the report's own headline table is made of

    rows, _ = _headline(summary)
    names = list(summary["profiles"])
    return table([("metric", "string"), *((n, "float") for n in names)],
                 [[r[0], *(None if v is None else float(v) for v in r[1:])] for r in rows])


@dg.asset(
    partitions_def=recipes_partitions,
    backfill_policy=RECIPE_BACKFILL_POLICY,
    deps=[selected_subset, scores_table],
    code_version=source_code_version("mmssr_core.report", "mmssr_core.report_metrics", "mmssr_core.report_plots",
                                     "mmssr_core.report_html"),
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
def eval_report(context: dg.AssetExecutionContext, store: StoreResource, scorer: ScorerResource,
                recipes: RecipesResource) -> dg.MaterializeResult:
    from mmssr_core import report_metrics as M
    from mmssr_core.report import build_report

    st = store.store()
    recipe = recipes.get(context.partition_key, st.root)
    if not st.exists(SELECTIONS_TABLE, recipe.name):
        raise dg.Failure(f"no selection for recipe {recipe.name!r}: materialize selected_subset first")
    selection = st.read(SELECTIONS_TABLE, recipe.name)
    scores = st.read(SCORES_TABLE, SCORES_PARTITION)
    # the whole scored pool, not only the selected sources: the report compares subset and pool
    sources = sorted(scores["source"].unique().to_list())
    with_pool = [s for s in sources if st.exists(RAW_POOL_TABLE, s)]
    pool = st.scan(RAW_POOL_TABLE, with_pool).collect() if with_pool and len(with_pool) == len(sources) else None
    with_failures = [s for s in sources if st.exists(FAILURE_TABLE, s)]
    failures = st.scan(FAILURE_TABLE, with_failures).collect() if with_failures else None
    result = build_report(
        st, recipe.name, selection, scores, pool=pool, seed=recipe.seed, budget=recipe.budget,
        threshold=recipe.threshold, rank=recipe.rank, capabilities=list(recipe.capabilities) if recipe.capabilities else None,
        taxonomy=scorer.taxonomy(), failures=failures, recipe=recipe.to_dict(),
        dedup=st.read_json(SELECTIONS_TABLE, recipe.name).get("dedup"),
    )
    meta: dict = {"selected": selection.height, "rank": recipe.rank,
                  "pool_passing_rule": M.passing_label(result.summary["threshold"]),
                  "headline": headline_table(result.summary),
                  **scores_scorer_metadata(scores["scorer"].unique().to_list() if "scorer" in scores.columns else [])}
    for name, kind, value in result.metadata_entries():
        meta[name] = _KINDS[kind](value)
    return dg.MaterializeResult(metadata=meta)
