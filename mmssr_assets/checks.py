"""Asset checks: the invariants that must hold before data flows on.

Blocking checks stop downstream steps of the same run when they fail (severity ERROR): a source whose
ingestion lost rows is not scored, unscored samples do not reach selection silently, a subset with ids
outside the pool is not reported. Each check is a plain function over the store (tested directly on
purpose-made bad data) wrapped by a thin `@asset_check`.
"""

import dagster as dg
import polars as pl
import pyarrow.parquet as pq

from mmssr_assets.metadata import table
from mmssr_assets.partitions import recipes_partitions, sources_partitions
from mmssr_assets.resources import RecipesResource, ScorerResource, StoreResource
from mmssr_core.recipes import Recipe
from mmssr_core.schema import (
    CAPABILITY_TABLE,
    FAILURE_TABLE,
    INGEST_STATS_TABLE,
    QUARANTINE_TABLE,
    RAW_POOL_TABLE,
    SELECTIONS_TABLE,
    STYLE_TABLE,
)
from mmssr_core.store import Store, StoreError

N_EXAMPLES = 5


def _rows(st: Store, table: str, partition: str) -> int:
    path = st.path(table, partition)
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0


def _fail(description: str, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.ERROR, description=description, metadata=metadata
    )


# -- pure check functions -----------------------------------------------------------------------
def rows_conserved(st: Store, source: str) -> dg.AssetCheckResult:
    """read = accepted + quarantined, and the Parquet partitions hold exactly those rows."""
    try:
        stats = st.read_json(INGEST_STATS_TABLE, source)
    except (StoreError, ValueError) as exc:
        return _fail(f"no ingest stats for source {source!r}: {exc}")
    raw_rows, q_rows = _rows(st, RAW_POOL_TABLE, source), _rows(st, QUARANTINE_TABLE, source)
    read, accepted, quarantined = int(stats["read"]), int(stats["accepted"]), int(stats["quarantined"])
    meta = {
        "read": read,
        "accepted": accepted,
        "quarantined": quarantined,
        "raw_pool_rows": raw_rows,
        "quarantine_rows": q_rows,
    }
    problems = []
    if read != accepted + quarantined:
        problems.append(f"read {read} != accepted {accepted} + quarantined {quarantined}")
    if raw_rows != accepted:
        problems.append(f"raw_pool/{source}.parquet holds {raw_rows} rows, stats say {accepted} accepted")
    if q_rows != quarantined:
        problems.append(f"quarantine/{source}.parquet holds {q_rows} rows, stats say {quarantined}")
    if problems:
        return _fail(f"source {source!r} lost or invented rows: " + "; ".join(problems), **meta)
    return dg.AssetCheckResult(
        passed=True, description=f"{read} read = {accepted} accepted + {quarantined} quarantined", metadata=meta
    )


def scores_complete(st: Store, source: str, capability_keys: list[str]) -> dg.AssetCheckResult:
    """Every accepted sample has a score for every capability, or a recorded failure."""
    if not st.exists(CAPABILITY_TABLE, source):
        return _fail(f"no capability_scores partition for source {source!r}")
    pool = st.read(RAW_POOL_TABLE, source).select("id")
    caps = st.read(CAPABILITY_TABLE, source)
    missing_cols = [k for k in capability_keys if k not in caps.columns]
    if missing_cols:
        return _fail(
            f"capability_scores/{source} lacks columns {missing_cols}", missing_columns=", ".join(missing_cols)
        )
    complete = caps.filter(pl.all_horizontal([pl.col(k).is_not_null() for k in capability_keys])).select("id")
    failed = (
        st.read(FAILURE_TABLE, source).select("id").unique()
        if st.exists(FAILURE_TABLE, source)
        else pl.DataFrame(schema={"id": pl.Utf8})
    )
    unexplained = pool.join(complete, on="id", how="anti").join(failed, on="id", how="anti")
    extra = caps.select("id").join(pool, on="id", how="anti")
    meta = {
        "accepted": pool.height,
        "complete": complete.height,
        "with_failure": failed.height,
        "unexplained": unexplained.height,
        "not_in_pool": extra.height,
    }
    if unexplained.height or extra.height:
        ids = unexplained["id"].head(N_EXAMPLES).to_list() + extra["id"].head(N_EXAMPLES).to_list()
        return _fail(
            f"source {source!r}: {unexplained.height} accepted samples lack scores without a recorded failure, "
            f"{extra.height} scored ids are not in the pool (e.g. {ids})",
            examples=", ".join(map(str, ids)),
            **meta,
        )
    return dg.AssetCheckResult(
        passed=True, metadata=meta, description=f"{complete.height} complete, {failed.height} with a recorded failure"
    )


def styles_in_label_set(st: Store, source: str, labels: list[str]) -> dg.AssetCheckResult:
    """Every style label is one of the taxonomy's labels; every accepted sample has a row."""
    if not st.exists(STYLE_TABLE, source):
        return _fail(f"no style_labels partition for source {source!r}")
    styles = st.read(STYLE_TABLE, source)
    bad = (
        styles.select("id", "styles")
        .explode("styles")
        .drop_nulls("styles")
        .filter(~pl.col("styles").is_in(list(labels)))
    )
    pool_rows = _rows(st, RAW_POOL_TABLE, source)
    meta = {
        "rows": styles.height,
        "accepted": pool_rows,
        "labelled": styles["styles"].drop_nulls().len(),
        "bad_labels": bad.height,
    }
    if bad.height:
        return _fail(
            f"source {source!r}: {bad.height} style labels outside the label set",
            examples=table([("id", "string"), ("label", "string")], bad.head(N_EXAMPLES).rows()),
            **meta,
        )
    if styles.height != pool_rows:
        return _fail(
            f"source {source!r}: style_labels has {styles.height} rows for {pool_rows} accepted samples", **meta
        )
    return dg.AssetCheckResult(passed=True, metadata=meta)


def budget_met(st: Store, recipe: str) -> dg.AssetCheckResult:
    """The subset has exactly its budget, or says why it is short (never more)."""
    try:
        summary = st.read_json(SELECTIONS_TABLE, recipe)
    except (StoreError, ValueError) as exc:
        return _fail(f"no selection summary for recipe {recipe!r}: {exc}")
    rows = _rows(st, SELECTIONS_TABLE, recipe)
    requested, selected = int(summary["requested"]), int(summary["selected"])
    reason = summary.get("reason") or ""
    meta = {"requested": requested, "selected": selected, "rows": rows, "reason": reason or "-"}
    if rows != selected:
        return _fail(f"recipe {recipe!r}: the Parquet holds {rows} rows but the summary says {selected}", **meta)
    if selected > requested:
        return _fail(f"recipe {recipe!r}: selected {selected} > budget {requested}", **meta)
    if selected < requested and not reason:
        return _fail(f"recipe {recipe!r}: selected {selected} < budget {requested} and no reason given", **meta)
    if selected < requested:
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=meta,
            description=f"short by {requested - selected}: {reason}",
        )
    return dg.AssetCheckResult(passed=True, metadata=meta, description=f"exactly {requested} samples")


def ids_in_pool(st: Store, recipe: str) -> dg.AssetCheckResult:
    """Every (source, id) of the subset exists in the raw pool; no duplicates."""
    if not st.exists(SELECTIONS_TABLE, recipe):
        return _fail(f"no selection for recipe {recipe!r}")
    sel = st.read(SELECTIONS_TABLE, recipe).select("id", "source")
    sources = sorted(sel["source"].unique().to_list())
    absent = [s for s in sources if not st.exists(RAW_POOL_TABLE, s)]
    if absent:
        return _fail(
            f"recipe {recipe!r}: sources {absent} have no raw_pool partition", missing_sources=", ".join(absent)
        )
    pool = st.scan(RAW_POOL_TABLE, sources).select("id", "source").collect() if sources else sel.clear()
    missing = sel.join(pool, on=["id", "source"], how="anti")
    dupes = sel.height - sel.unique().height
    meta = {"selected": sel.height, "missing": missing.height, "duplicates": dupes}
    if missing.height or dupes:
        return _fail(
            f"recipe {recipe!r}: {missing.height} ids not in the pool, {dupes} duplicates",
            examples=table([("id", "string"), ("source", "string")], missing.head(N_EXAMPLES).rows()),
            **meta,
        )
    return dg.AssetCheckResult(passed=True, metadata=meta)


def one_per_duplicate_group(st: Store, recipe: Recipe) -> dg.AssetCheckResult:
    """No two selected samples belong to one duplicate group of the recipe's dedup setting."""
    from mmssr_core.dedup.summary import repeated_groups
    from mmssr_core.dedup.table import read_duplicates

    if not recipe.dedup.enabled:
        return dg.AssetCheckResult(passed=True, description="deduplication is off for this recipe")
    if not st.exists(SELECTIONS_TABLE, recipe.name):
        return _fail(f"no selection for recipe {recipe.name!r}")
    try:
        groups = read_duplicates(st, recipe.dedup)
    except StoreError as exc:
        return _fail(str(exc))
    repeated = repeated_groups(st.read(SELECTIONS_TABLE, recipe.name), groups)
    meta = {"groups_with_repeats": repeated.height, "setting": recipe.dedup.key}
    if repeated.height:
        rows = [(g, ", ".join(m)) for g, m in repeated.head(N_EXAMPLES).iter_rows()]
        return _fail(
            f"recipe {recipe.name!r}: {repeated.height} duplicate groups have several selected members",
            examples=table([("group", "string"), ("selected members", "string")], rows),
            **meta,
        )
    return dg.AssetCheckResult(passed=True, metadata=meta, description="at most one sample per duplicate group")


# -- Dagster wrappers ---------------------------------------------------------------------------
@dg.asset_check(
    asset="raw_pool",
    partitions_def=sources_partitions,
    blocking=True,
    description="read = accepted + quarantined, and the Parquet partitions hold exactly those rows",
)
def raw_pool_rows_conserved(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    return rows_conserved(store.store(), context.partition_key)


@dg.asset_check(
    asset="capability_scores",
    partitions_def=sources_partitions,
    blocking=True,
    description="every accepted sample has scores for all capabilities or a recorded failure",
)
def capability_scores_complete(
    context: dg.AssetCheckExecutionContext, store: StoreResource, scorer: ScorerResource
) -> dg.AssetCheckResult:
    return scores_complete(store.store(), context.partition_key, scorer.taxonomy().keys)


@dg.asset_check(
    asset="style_labels",
    partitions_def=sources_partitions,
    blocking=True,
    description="style labels lie within the taxonomy's label set; one row per accepted sample",
)
def style_labels_in_label_set(
    context: dg.AssetCheckExecutionContext, store: StoreResource, scorer: ScorerResource
) -> dg.AssetCheckResult:
    return styles_in_label_set(store.store(), context.partition_key, list(scorer.taxonomy().styles))


@dg.asset_check(
    asset="selected_subset",
    partitions_def=recipes_partitions,
    blocking=True,
    description="the subset has exactly its budget, or reports why it is short",
)
def selected_subset_budget(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    return budget_met(store.store(), context.partition_key)


@dg.asset_check(
    asset="selected_subset",
    partitions_def=recipes_partitions,
    blocking=True,
    description="every selected (source, id) exists in the raw pool, without duplicates",
)
def selected_subset_ids_in_pool(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    return ids_in_pool(store.store(), context.partition_key)


@dg.asset_check(
    asset="selected_subset",
    partitions_def=recipes_partitions,
    blocking=True,
    description="at most one selected sample per duplicate group",
)
def selected_subset_one_per_duplicate_group(
    context: dg.AssetCheckExecutionContext, store: StoreResource, recipes: RecipesResource
) -> dg.AssetCheckResult:
    st = store.store()
    return one_per_duplicate_group(st, recipes.get(context.partition_key, st.root))


SOURCE_CHECKS = [raw_pool_rows_conserved, capability_scores_complete, style_labels_in_label_set]
RECIPE_CHECKS = [selected_subset_budget, selected_subset_ids_in_pool, selected_subset_one_per_duplicate_group]
