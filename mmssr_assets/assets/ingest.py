"""`raw_pool`: one source folder -> accepted samples (and its quarantine), a thin wrapper over ingest_source."""


import dagster as dg
import polars as pl

from mmssr_assets.metadata import first_human_turn, md_table, path_md
from mmssr_assets.partitions import OWNERS, SOURCE_BACKFILL_POLICY, sources_partitions
from mmssr_assets.resources import SourcesResource, StoreResource
from mmssr_core.schema import FINGERPRINT_TABLE, INGEST_STATS_TABLE, QUARANTINE_TABLE, RAW_POOL_TABLE, REASONS

N_EXAMPLES = 5


class IngestConfig(dg.Config):
    """Per-run knobs of ingestion."""

    format: str = "auto"  # auto | llava | sharegpt | parquet
    image_root: str | None = None  # default: the source folder
    force: bool = False  # re-ingest even when the folder and the ingestion code are unchanged


def ingest_code_version() -> str:
    """Changes when the ingestion code or the table schemas change (so unchanged data is re-ingested)."""
    import hashlib
    from pathlib import Path

    import mmssr_core.ingest as pkg
    import mmssr_core.schema as schema

    h = hashlib.sha256()
    for f in sorted(Path(pkg.__file__).parent.glob("*.py")) + [Path(schema.__file__)]:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def unchanged_since_last_ingest(st, source: str, fingerprint: str, code: str) -> dict | None:
    """The last ingest stats when folder and code are as they were and the partitions exist, else None."""
    from mmssr_core.store import StoreError

    try:
        rec = st.read_json(FINGERPRINT_TABLE, source)
        stats = st.read_json(INGEST_STATS_TABLE, source)
    except (StoreError, ValueError):
        return None
    if rec.get("data") != fingerprint or rec.get("ingest") != code:
        return None
    if not (st.exists(RAW_POOL_TABLE, source) and st.exists(QUARANTINE_TABLE, source)):
        return None
    return stats


@dg.asset(
    partitions_def=sources_partitions,
    backfill_policy=SOURCE_BACKFILL_POLICY,
    group_name="ingestion",
    kinds={"python", "parquet"},
    owners=OWNERS,
    tags={"stage": "ingest"},
    description=(
        "Accepted samples of one source folder in the canonical LLaVA form (docs/ingestion.md), one Parquet per "
        "source under `raw_pool/`. Rejected samples land in `quarantine/<source>.parquet` with a reason "
        "code; read = accepted + quarantined."
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
    fingerprint = sources.fingerprint(source)
    code = ingest_code_version()
    previous = None if config.image_root or config.format != "auto" or config.force else (
        unchanged_since_last_ingest(st, source, fingerprint, code))
    if previous is not None:
        context.log.info(f"source {source!r} unchanged since its last ingestion: partitions kept")
        meta = raw_pool_metadata(st, source, previous, fingerprint)
        meta["unchanged"] = True
        return dg.MaterializeResult(metadata=meta)

    def progress(info: dict) -> None:
        context.log.info(f"ingest {source}: {info}")

    try:
        result = ingest_source(found[source], source, st, image_root=config.image_root, fmt=config.format,
                               progress=progress)
    except IngestError as exc:
        raise dg.Failure(f"cannot ingest source {source!r}: {exc}") from exc
    st.write_json(FINGERPRINT_TABLE, source, {"data": fingerprint, "ingest": code, "scorer": None})
    meta = raw_pool_metadata(st, source, result.to_dict(), fingerprint)
    meta["unchanged"] = False
    return dg.MaterializeResult(metadata=meta)


def raw_pool_metadata(st, source: str, stats: dict, fingerprint: str = "") -> dict:
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
        "data_fingerprint": fingerprint,
        "quarantine_by_reason": dg.MetadataValue.md(
            md_table(
                ["reason", "count", "meaning"],
                [(r, n, REASONS.get(r, "")) for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])],
            )
            if reasons
            else "nothing quarantined"
        ),
    }
    for reason, n in reasons.items():
        meta[f"quarantined/{reason}"] = n
    if st.exists(QUARANTINE_TABLE, source) and stats["quarantined"]:
        q = pl.read_parquet(st.path(QUARANTINE_TABLE, source), n_rows=N_EXAMPLES)
        meta["quarantine_examples"] = dg.MetadataValue.md(
            md_table(["position", "id", "reason", "message"], q.select("position", "id", "reason", "message").rows(), 100)
        )
    if st.exists(RAW_POOL_TABLE, source) and stats["accepted"]:
        head = pl.read_parquet(st.path(RAW_POOL_TABLE, source), n_rows=N_EXAMPLES, columns=["id", "images", "conversations"])
        meta["preview"] = dg.MetadataValue.md(
            md_table(
                ["id", "images", "first question"],
                [(r["id"], ", ".join(r["images"] or []), first_human_turn(r["conversations"])) for r in head.iter_rows(named=True)],
            )
        )
    return meta
