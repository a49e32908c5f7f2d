"""`eval_report`: what one recipe's subset holds against the pool and a random subset of the same size."""


import dagster as dg

from mmssr_assets.assets.selection import scores_table
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
        from mmssr_core.report_inputs import ReportInputsError, gather_report_inputs

        recipe = by_name[context.partition_key]
        st = store.store()
        try:
            inputs = gather_report_inputs(st, recipe.name, recipe=recipe)
        except ReportInputsError as exc:
            raise dg.Failure(f"{exc} (materialize selected_subset first)") from None
        selection = inputs.selection
        result = inputs.build(st, taxonomy=scorer.taxonomy())
        meta: dict = {"selected": selection.height, "rank": recipe.rank,
                      "pool_passing_rule": M.passing_label(result.summary["threshold"])}
        for name, kind, value in result.metadata_entries():
            meta[name] = _KINDS[kind](value)
        return dg.MaterializeResult(metadata=meta)

    return eval_report
