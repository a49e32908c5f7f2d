"""`eval_report`: what one recipe's subset holds against the pool and a random subset of the same size."""


import dagster as dg

from mmssr_assets.assets.selection import scores_table
from mmssr_core.schema import FAILURE_TABLE, RAW_POOL_TABLE, SCORES_PARTITION, SCORES_TABLE, SELECTIONS_TABLE
from mmssr_assets.partitions import OWNERS, RECIPE_BACKFILL_POLICY, recipes_partitions
from mmssr_assets.resources import ScorerResource, StoreResource
from mmssr_core.recipes import Recipe

_KINDS = {
    "md": dg.MetadataValue.md,
    "path": lambda v: dg.MetadataValue.path(str(v)),
    "float": dg.MetadataValue.float,
    "int": dg.MetadataValue.int,
    "json": dg.MetadataValue.json,
}


def build_eval_report(recipes: list[Recipe], selected_subset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    by_name = {r.name: r for r in recipes}

    @dg.asset(
        partitions_def=recipes_partitions(recipes),
        backfill_policy=RECIPE_BACKFILL_POLICY,
        deps=[selected_subset, scores_table],
        group_name="reports",
        kinds={"html", "json"},
        owners=OWNERS,
        tags={"stage": "report"},
        description=(
            "The eval report of one recipe: per-capability scores of the subset against the pool and a "
            "seeded random subset of the same size, as `reports/<recipe>.html` and `.json`."
        ),
    )
    def eval_report(context: dg.AssetExecutionContext, store: StoreResource, scorer: ScorerResource) -> dg.MaterializeResult:
        from mmssr_core import report_metrics as M
        from mmssr_core.report import build_report

        recipe = by_name[context.partition_key]
        st = store.store()
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
                      "pool_passing_rule": M.passing_label(result.summary["threshold"])}
        for name, kind, value in result.metadata_entries():
            meta[name] = _KINDS[kind](value)
        return dg.MaterializeResult(metadata=meta)

    return eval_report
