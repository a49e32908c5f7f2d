"""`capability_scores` + `style_labels`: one scoring step per source (one backend pass gives both).

Incremental by construction: `score_source` looks every sample up in the score cache keyed by
(content_hash, scorer identity) and sends only new or changed samples to the backend; the `cached`
count in the metadata shows how much was reused.
"""


import time

import dagster as dg
import polars as pl

from mmssr_assets.assets.ingest import raw_pool
from mmssr_assets.executors import GPU_OP_TAGS
from mmssr_assets.metadata import md_table, path_md
from mmssr_assets.partitions import GPU_POOL, OWNERS, SOURCE_BACKFILL_POLICY, sources_partitions
from mmssr_assets.resources import ScorerResource, SourcesResource, StoreResource
from mmssr_core.schema import CAPABILITY_TABLE, FAILURE_TABLE, FINGERPRINT_TABLE, STYLE_TABLE


class ScoringConfig(dg.Config):
    """Per-run knobs of scoring (set in the launchpad or `run_config`)."""

    batch_size: int = 8  # samples per backend call
    chunk_size: int = 256  # samples per cache flush (what a kill can lose at most)


_COMMON = dict(
    partitions_def=sources_partitions,
    deps=[raw_pool],
    group_name="scoring",
    owners=OWNERS,
)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "capability_scores",
            kinds={"python", "parquet"},
            tags={"stage": "score"},
            description=(
                "Per-capability helpfulness scores (expected score over the digits 0..5, plus the argmax) "
                "for every accepted sample of a source: `capability_scores/<source>.parquet`. Samples the "
                "backend could not score are null here and listed in `score_failures/<source>.parquet`."
            ),
            **_COMMON,
        ),
        dg.AssetSpec(
            "style_labels",
            kinds={"python", "parquet"},
            tags={"stage": "score"},
            description=(
                "Ordered interaction-style labels (multi-label, within the taxonomy's label set) of every "
                "accepted sample of a source: `style_labels/<source>.parquet`."
            ),
            **_COMMON,
        ),
    ],
    partitions_def=sources_partitions,
    backfill_policy=SOURCE_BACKFILL_POLICY,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,  # Celery: the `gpu` queue; k8s: the pod's GPU request (mmssr_assets/executors.py)
    name="score_source",
    can_subset=False,
)
def score_source_step(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    store: StoreResource,
    scorer: ScorerResource,
    sources: SourcesResource,
):
    from mmssr_core.scoring.split import score_source_split

    source = context.partition_key
    st = store.store()
    taxonomy = scorer.taxonomy()
    backend = scorer.get_backend()
    last_log = [0.0]

    def progress(p) -> None:
        now = time.monotonic()
        if now - last_log[0] > 5 or p.done == p.total:
            last_log[0] = now
            context.log.info(f"score {source}: {p.done}/{p.total} samples ({p.cached} cached) in {p.seconds:.1f}s")

    styles_backend = scorer.get_styles_backend()
    kw = dict(taxonomy=taxonomy, batch_size=config.batch_size, chunk_size=config.chunk_size, progress=progress,
              profile=scorer.profile)
    try:  # a split scorer: capabilities from `backend`, styles from `styles_backend` (two caches)
        result = score_source_split(st, source, backend, styles_backend, **kw)
    finally:
        for b in (backend, styles_backend):
            close = getattr(b, "close", None)
            if close:
                close()
    fp = _record_scorer(st, source, scorer.fingerprint())
    run = result.to_dict()
    common = {
        "scored": result.scored,
        "cached": result.cached,
        "failed": result.failed,
        "total": result.total,
        "computed": result.computed,
        "seconds": round(result.seconds, 3),
        "scorer": result.identity,
        "scorer_fingerprint": fp.get("scorer") or "",
        "data_fingerprint": fp.get("data") or "",
    }
    if result.failures_by_reason:
        common["failures_by_reason"] = dg.MetadataValue.md(
            md_table(["reason", "count"], sorted(result.failures_by_reason.items(), key=lambda kv: -kv[1]))
        )
    caps = st.read(CAPABILITY_TABLE, source)
    keys = [k for k in taxonomy.keys if k in caps.columns]
    means = caps.select([pl.col(k).mean() for k in keys]).row(0) if keys and caps.height else [None] * len(keys)
    yield dg.MaterializeResult(
        asset_key="capability_scores",
        metadata={
            **common,
            "dagster/row_count": caps.height,
            "path": path_md(st.path(CAPABILITY_TABLE, source)),
            "failures_path": path_md(st.path(FAILURE_TABLE, source)),
            "mean_scores": dg.MetadataValue.md(
                md_table(["capability", "mean expected score"], [(k, "" if m is None else f"{m:.3f}") for k, m in zip(keys, means)])
            ),
        },
    )
    styles = st.read(STYLE_TABLE, source)
    counts = (
        styles.select(pl.col("styles").list.first().alias("primary")).drop_nulls()["primary"].value_counts(sort=True)
        if styles.height
        else pl.DataFrame({"primary": [], "count": []})
    )
    yield dg.MaterializeResult(
        asset_key="style_labels",
        metadata={
            **common,
            "dagster/row_count": styles.height,
            "path": path_md(st.path(STYLE_TABLE, source)),
            "primary_styles": dg.MetadataValue.md(md_table(["primary style", "samples"], counts.rows())),
        },
    )
    context.log.info(f"score {source}: {run}")


def _record_scorer(st, source: str, scorer_fp: str) -> dict:
    """Remember which scorer scored which data, for the rescoring schedule."""
    from mmssr_core.store import StoreError

    try:
        fp = st.read_json(FINGERPRINT_TABLE, source)
    except (StoreError, ValueError):
        fp = {"data": None}
    fp["scorer"] = scorer_fp
    st.write_json(FINGERPRINT_TABLE, source, fp)
    return fp
