"""The downstream loop as assets: `downstream_run` (per recipe), `downstream_full_run` (the whole pool, the
reference every share is relative to) and `downstream_eval` (the paper's table over all stored results).

Training is your command (`DownstreamResource.command`, default $MMSSR_TRAIN_EVAL_CMD), run as a
subprocess per recipe by `mmssr_core.downstream`. These assets are never part of the scheduled jobs (a
run trains a model) and are not in the default graph: the code location adds them when
$MMSSR_DOWNSTREAM=on (or `build_definitions(downstream=True)`); materialize them on purpose.
"""

from typing import Optional

import dagster as dg
from pydantic import Field

from mmssr_assets.metadata import frame_table, table
from mmssr_assets.partitions import OWNERS, RECIPE_BACKFILL_POLICY, recipes_partitions
from mmssr_assets.resources import RecipesResource, StoreResource
from mmssr_core.schema import RAW_POOL_TABLE, SELECTIONS_TABLE

GROUP = "downstream"
_ON_PURPOSE = (
    " Not run by the demo, any job or schedule: it trains a model with your command "
    "($MMSSR_TRAIN_EVAL_CMD), so it stays unmaterialized until you launch it."
)


class DownstreamResource(dg.ConfigurableResource):
    """The external train-and-evaluate command and how training data is exported for it."""

    command: Optional[str] = Field(
        default=None,
        description="command template (default $MMSSR_TRAIN_EVAL_CMD); placeholders {dataset} {dataset_dir} "
        "{dataset_name} {dataset_info} {image_root} {recipe} {out} {results}",
    )
    timeout_s: Optional[float] = Field(default=None, description="seconds before a run is killed")
    export_format: str = Field(default="llava", description="training data format (mmssr_core.export)")
    full_recipe: str = Field(default="full", description="name under which the full-data run is stored")

    def train_eval(self):
        from mmssr_core.downstream import TrainEvalCommand

        if self.command:
            return TrainEvalCommand(self.command, timeout_s=self.timeout_s)
        return TrainEvalCommand.from_env(timeout_s=self.timeout_s)


def _run(context, st, name: str, selection, downstream: DownstreamResource, method, budget) -> dg.MaterializeResult:
    from mmssr_core import downstream as D

    try:
        command = downstream.train_eval()
        command.words()
        if not st.partitions(RAW_POOL_TABLE):
            raise dg.Failure("no raw_pool in the store: materialize raw_pool first")
        if selection is None:
            selection = st.scan(RAW_POOL_TABLE).select("id", "source").collect()
        values = D.export_for_training(
            st, name, selection, st.table_dir(D.RESULTS_TABLE) / "data" / name, fmt=downstream.export_format
        )
        rec = D.run_train_eval(st, name, command, values, method=method, budget=budget, log=context.log.info)
    except D.DownstreamError as exc:
        raise dg.Failure(str(exc)) from None
    meta = {
        "benchmarks": table(
            [("benchmark", "string"), ("score", "float")], [(b, float(v)) for b, v in sorted(rec["benchmarks"].items())]
        ),
        "train_samples": selection.height,
        "run_dir": dg.MetadataValue.path(rec["run_dir"]),
        "dataset": dg.MetadataValue.path(values["dataset"]),
        "duration_s": float(rec["duration_s"]),
    }
    for bench, score in rec["benchmarks"].items():
        meta[f"score/{bench}"] = float(score)
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    partitions_def=recipes_partitions,
    backfill_policy=RECIPE_BACKFILL_POLICY,
    deps=["selected_subset"],
    group_name=GROUP,
    kinds={"python"},
    owners=OWNERS,
    tags={"stage": "downstream"},
    description=(
        "Train and evaluate on one recipe's subset: export it (LLaVA JSON + LLaMA-Factory dataset_info.json), "
        "run the configured command, store its benchmark results as `downstream/<recipe>.json`. "
        "A failed run keeps the earlier results." + _ON_PURPOSE
    ),
)
def downstream_run(
    context: dg.AssetExecutionContext, store: StoreResource, downstream: DownstreamResource, recipes: RecipesResource
) -> dg.MaterializeResult:
    st = store.store()
    recipe = recipes.get(context.partition_key, st.root)
    if not st.exists(SELECTIONS_TABLE, recipe.name):
        raise dg.Failure(f"no selection for recipe {recipe.name!r}: materialize selected_subset first")
    selection = st.read(SELECTIONS_TABLE, recipe.name)
    return _run(context, st, recipe.name, selection, downstream, recipe.method, recipe.budget)


@dg.asset(
    deps=["raw_pool"],
    group_name=GROUP,
    kinds={"python"},
    owners=OWNERS,
    tags={"stage": "downstream"},
    description="Train and evaluate on the whole pool: the full-data reference of the paper's table." + _ON_PURPOSE,
)
def downstream_full_run(
    context: dg.AssetExecutionContext, store: StoreResource, downstream: DownstreamResource
) -> dg.MaterializeResult:
    return _run(context, store.store(), downstream.full_recipe, None, downstream, "full", None)


@dg.asset(
    deps=[downstream_run, downstream_full_run],
    group_name=GROUP,
    kinds={"polars"},
    owners=OWNERS,
    tags={"stage": "downstream"},
    description=(
        "The paper's table from every stored results file: per benchmark score and share of the full-data "
        "run, mean share, and benchmarks beaten over random at the same budget. Materialize it after "
        "downstream_run (and downstream_full_run) wrote results."
    ),
)
def downstream_eval(
    context: dg.AssetExecutionContext, store: StoreResource, downstream: DownstreamResource
) -> dg.MaterializeResult:
    from mmssr_core import downstream as D

    st = store.store()
    records = D.load_results(st)
    if not records:
        raise dg.Failure("no downstream results yet: materialize downstream_run (and downstream_full_run) first")
    df = D.paper_table(records, full=downstream.full_recipe)
    path = st.write(D.RESULTS_TABLE, "table", df)
    meta = {
        "table": frame_table(df, None),
        "recipes": len(records),
        "has_full_run": downstream.full_recipe in records,
        "path": dg.MetadataValue.path(str(path)),
    }
    for r in df.iter_rows(named=True):
        if r["share_of_full"] is not None:
            meta[f"share_of_full/{r['recipe']}"] = float(r["share_of_full"])
        if r["beaten_random"] is not None:
            meta[f"beaten_random/{r['recipe']}"] = int(r["beaten_random"])
    return dg.MaterializeResult(metadata=meta)


def build_downstream_assets() -> list[dg.AssetsDefinition]:
    """The train-and-evaluate assets (added to the graph only on request: $MMSSR_DOWNSTREAM=on)."""
    return [downstream_run, downstream_full_run, downstream_eval]
