"""`raw_pool`: one source folder -> accepted samples (and its quarantine), a thin wrapper over ingest_source."""


import dagster as dg
import polars as pl

from mmssr_assets.metadata import first_human_turn, md_table, path_md
from mmssr_assets.partitions import OWNERS, SOURCE_BACKFILL_POLICY, sources_partitions
from mmssr_assets.resources import SourcesResource, StoreResource
from mmssr_core.schema import REASONS

FINGERPRINT_TABLE = "fingerprints"  # <store>/fingerprints/<source>.json: what the schedule compares
N_EXAMPLES = 5


class IngestConfig(dg.Config):
    """Per-run knobs of ingestion."""

    format: str = "auto"  # auto | llava | sharegpt | parquet
    image_root: str | None = None  # default: the source folder


@dg.asset(
    partitions_def=sources_partitions,
    backfill_policy=SOURCE_BACKFILL_POLICY,
    group_name="ingestion",
    kinds={"python", "parquet"},
    owners=OWNERS,
    tags={"stage": "ingest"},
    description=(
        "Accepted samples of one source folder in the canonical LLaVA form (DESIGN 2.1), one Parquet per "
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

    def progress(info: dict) -> None:
        context.log.info(f"ingest {source}: {info}")

    try:
        result = ingest_source(found[source], source, st, image_root=config.image_root, fmt=config.format,
                               progress=progress)
    except IngestError as exc:
        raise dg.Failure(f"cannot ingest source {source!r}: {exc}") from exc
    st.write_json(FINGERPRINT_TABLE, source, {"data": fingerprint, "scorer": None})
    return dg.MaterializeResult(metadata=raw_pool_metadata(st, source, result.to_dict(), fingerprint))


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
        "path": path_md(st.path("raw_pool", source)),
        "quarantine_path": path_md(st.path("quarantine", source)),
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
    if st.exists("quarantine", source) and stats["quarantined"]:
        q = pl.read_parquet(st.path("quarantine", source), n_rows=N_EXAMPLES)
        meta["quarantine_examples"] = dg.MetadataValue.md(
            md_table(["position", "id", "reason", "message"], q.select("position", "id", "reason", "message").rows(), 100)
        )
    if st.exists("raw_pool", source) and stats["accepted"]:
        head = pl.read_parquet(st.path("raw_pool", source), n_rows=N_EXAMPLES, columns=["id", "images", "conversations"])
        meta["preview"] = dg.MetadataValue.md(
            md_table(
                ["id", "images", "first question"],
                [(r["id"], ", ".join(r["images"] or []), first_human_turn(r["conversations"])) for r in head.iter_rows(named=True)],
            )
        )
    return meta
