"""`raw_pool`: one source folder -> accepted samples (and its quarantine), a thin wrapper over ingest_source.

Freshness is Dagster's: the asset's code version hashes the ingestion code, its input is the observed
`source_folder` partition, and its data version is the content of the accepted samples (ids and content
hashes). A run over a folder whose observed version and the ingestion code are what the last
materialization recorded keeps the store's partitions (`unchanged: true`) and reports the same data
version, so nothing downstream turns stale.
"""

import dagster as dg
import polars as pl

from mmssr_assets.metadata import first_human_turn, path_md, table
from mmssr_assets.partitions import OWNERS, SOURCE_BACKFILL_POLICY, sources_partitions
from mmssr_assets.resources import SourcesResource, StoreResource
from mmssr_assets.versions import pool_version, source_code_version
from mmssr_core.schema import INGEST_STATS_TABLE, QUARANTINE_TABLE, RAW_POOL_TABLE, REASONS

N_EXAMPLES = 5
SOURCE_VERSION = "source_version"  # metadata: the observed folder version this materialization ingested


class IngestConfig(dg.Config):
    """Per-run knobs of ingestion."""

    format: str = "auto"  # auto | llava | sharegpt | parquet
    image_root: str | None = None  # default: the source folder
    force: bool = False  # re-ingest even when the folder and the ingestion code are unchanged


def ingest_code_version() -> str:
    """Changes when the ingestion code or the table schemas change (so unchanged data is re-ingested)."""
    return source_code_version("mmssr_core.ingest", "mmssr_core.schema")


def unchanged_since_last_ingest(context, st, source: str, folder: str) -> dict | None:
    """The last ingest stats when Dagster's last materialization of this partition ingested the same
    folder version with the same code and the store still holds its partitions, else None."""
    from mmssr_core.store import StoreError

    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[source]), limit=1
    ).records
    if not records:
        return None
    entry = records[0].event_log_entry
    last = entry.asset_materialization
    recorded = last.metadata.get(SOURCE_VERSION)
    if getattr(recorded, "value", recorded) != folder:
        return None
    if (entry.tags or {}).get("dagster/code_version") != context.assets_def.code_versions_by_key[context.asset_key]:
        return None
    if not (st.exists(RAW_POOL_TABLE, source) and st.exists(QUARANTINE_TABLE, source)):
        return None
    try:
        return st.read_json(INGEST_STATS_TABLE, source)
    except (StoreError, ValueError):
        return None


@dg.asset(
    partitions_def=sources_partitions,
    backfill_policy=SOURCE_BACKFILL_POLICY,
    deps=["source_folder"],
    code_version=ingest_code_version(),
    group_name="ingestion",
    kinds={"python", "parquet"},
    owners=OWNERS,
    tags={"stage": "ingest"},
    description=(
        "Accepted samples of one source folder in the canonical LLaVA form (id, source, images with their "
        "checked files, conversations, content hash), one Parquet per source under `raw_pool/`. Rejected "
        "samples land in `quarantine/<source>.parquet` with a reason code; read = accepted + quarantined. "
        "Stale when its `source_folder` has a new version or the ingestion code changed."
    ),
)
def raw_pool(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    store: StoreResource,
    sources: SourcesResource,
) -> dg.MaterializeResult:
    from mmssr_core.ingest import IngestError, ingest_source

    source = context.partition_key
    st = store.store()
    found = sources.discover()
    if source not in found:
        raise dg.Failure(
            f"source {source!r} has no folder with a pool file under {sources.path()}",
            metadata={"sources_root": path_md(sources.path()), "found": ", ".join(found) or "(none)"},
        )
    folder = sources.fingerprint(source)
    previous = (
        None
        if config.image_root or config.format != "auto" or config.force
        else (unchanged_since_last_ingest(context, st, source, folder))
    )
    if previous is not None:
        context.log.info(f"source {source!r} unchanged since its last ingestion: partitions kept")
        return _result(st, source, previous, folder, unchanged=True)

    def progress(info: dict) -> None:
        context.log.info(f"ingest {source}: {info}")

    try:
        result = ingest_source(
            found[source], source, st, image_root=config.image_root, fmt=config.format, progress=progress
        )
    except IngestError as exc:
        raise dg.Failure(f"cannot ingest source {source!r}: {exc}") from exc
    return _result(st, source, result.to_dict(), folder, unchanged=False)


def _result(st, source: str, stats: dict, folder: str, *, unchanged: bool) -> dg.MaterializeResult:
    meta = raw_pool_metadata(st, source, stats)
    meta[SOURCE_VERSION] = folder
    meta["unchanged"] = unchanged
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(pool_version(st, source)))


def raw_pool_metadata(st, source: str, stats: dict) -> dict:
    reasons = stats.get("reasons") or {}
    meta: dict = {
        "read": stats["read"],
        "accepted": stats["accepted"],
        "quarantined": stats["quarantined"],
        "text_only": stats.get("text_only", 0),
        "duplicate_content": stats.get("duplicate_content", 0),
        "dagster/row_count": stats["accepted"],
        "input": path_md(stats.get("input", "")),
        "path": path_md(st.path(RAW_POOL_TABLE, source)),
        "quarantine_path": path_md(st.path(QUARANTINE_TABLE, source)),
        "quarantine_by_reason": table(
            [("reason", "string"), ("count", "int"), ("meaning", "string")],
            [(r, n, REASONS.get(r, "")) for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])],
        ),
    }
    for reason, n in reasons.items():
        meta[f"quarantined/{reason}"] = n
    if st.exists(QUARANTINE_TABLE, source) and stats["quarantined"]:
        q = pl.read_parquet(st.path(QUARANTINE_TABLE, source), n_rows=N_EXAMPLES)
        meta["quarantine_examples"] = table(
            [("position", "int"), ("id", "string"), ("reason", "string"), ("message", "string")],
            q.select("position", "id", "reason", "message").rows(),
        )
    if st.exists(RAW_POOL_TABLE, source) and stats["accepted"]:
        head = pl.read_parquet(
            st.path(RAW_POOL_TABLE, source), n_rows=N_EXAMPLES, columns=["id", "images", "conversations"]
        )
        meta["preview"] = table(
            [("id", "string"), ("images", "string"), ("first question", "string")],
            [
                (r["id"], ", ".join(r["images"] or []), first_human_turn(r["conversations"]))
                for r in head.iter_rows(named=True)
            ],
        )
    return meta
