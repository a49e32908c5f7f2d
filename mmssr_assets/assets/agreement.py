"""`scorer_agreement`: how well the scorer that wrote the scores table agrees with the teacher labels.

Teacher labels come from `mmssr label` (store table `teacher_labels`, not an asset: labelling costs
teacher calls and is started by hand). Without labels the asset records that and writes nothing, so a
full-graph materialization never fails for want of a teacher. In no job or schedule: the demo never
materializes it, and its description says so.
"""

import base64

import dagster as dg

from mmssr_assets.assets.selection import scores_table
from mmssr_assets.metadata import scores_scorer_metadata, table
from mmssr_assets.partitions import OWNERS
from mmssr_assets.resources import ScorerResource, StoreResource
from mmssr_assets.versions import source_code_version
from mmssr_core.schema import SCORES_PARTITION, SCORES_TABLE

_PER_CAPABILITY = [("capability", "string"), ("n", "int"), ("spearman", "float"), ("mae", "float"), ("exact", "float")]


def _png_md(path, title: str) -> str:
    data = base64.b64encode(open(path, "rb").read()).decode()
    return f"![{title}](data:image/png;base64,{data})"


@dg.asset(
    deps=[scores_table],
    code_version=source_code_version("mmssr_core.agreement"),
    group_name="reports",
    kinds={"json", "parquet"},
    owners=OWNERS,
    tags={"stage": "report"},
    description=(
        "Agreement of the scores table with the teacher labels (`mmssr label`): per-capability Spearman "
        "and mean absolute error, the confusion of integer scores, style micro-F1 and primary-style "
        "accuracy, with plots: `agreement/pool.parquet`, `agreement/pool.json`, `agreement/pool_plots/`. "
        "Not part of the demo: label a sample with a teacher first (`mmssr label`), then materialize this "
        "asset by hand; without labels it records that and writes nothing."
    ),
)
def scorer_agreement(
    context: dg.AssetExecutionContext, store: StoreResource, scorer: ScorerResource
) -> dg.MaterializeResult:
    from mmssr_core.agreement import AgreementError, compute_agreement, read_teacher_labels, save_agreement
    from mmssr_core.schema import TEACHER_TABLE
    from mmssr_core.store import StoreError

    st = store.store()
    if not st.partitions(TEACHER_TABLE):
        context.log.warning("no teacher labels in the store: run `mmssr label` first; nothing computed")
        return dg.MaterializeResult(
            metadata={
                "status": dg.MetadataValue.md(
                    "No teacher labels yet: run `mmssr label --store ... --size N "
                    "--base-url URL` and materialize again."
                ),
                "n_matched": 0,
            }
        )
    if not st.exists(SCORES_TABLE, SCORES_PARTITION):
        raise dg.Failure("the scores table is missing: materialize scores_table first")
    scores = st.read(SCORES_TABLE, SCORES_PARTITION)
    teacher = read_teacher_labels(st)
    taxonomy = scorer.taxonomy()
    try:
        result = compute_agreement(scores, teacher, [k for k in taxonomy.keys if k in teacher.columns])
    except (AgreementError, StoreError) as exc:
        raise dg.Failure(str(exc)) from None
    paths = save_agreement(st, result)

    def num(v):
        return dg.MetadataValue.float(float(v)) if v is not None else dg.MetadataValue.text("n/a")

    styles = result.styles or {}
    meta = {
        "agreement": table(
            _PER_CAPABILITY, [(c["key"], c["n"], c["spearman"], c["mae"], c["accuracy"]) for c in result.capabilities]
        ),
        "n_matched": result.n_matched,
        "n_labelled": result.n_labelled,
        "mean_spearman": num(result.mean_spearman),
        "mean_mae": num(result.mean_mae),
        "integer_accuracy": num(result.accuracy),
        "style_micro_f1": num(styles.get("micro_f1")),
        "primary_style_accuracy": num(styles.get("primary_accuracy")),
        **scores_scorer_metadata(result.scorer.split(" | ")),
        "teacher": dg.MetadataValue.text(result.teacher),
        "summary": dg.MetadataValue.path(str(paths["json"])),
    }
    for cap in result.capabilities:
        if cap["spearman"] is not None:
            meta[f"spearman/{cap['key']}"] = dg.MetadataValue.float(cap["spearman"])
    for name in ("spearman", "confusion"):
        if name in paths:
            meta[f"plot_{name}"] = dg.MetadataValue.md(_png_md(paths[name], name))
    return dg.MaterializeResult(metadata=meta)
