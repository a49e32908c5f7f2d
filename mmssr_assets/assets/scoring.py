"""`capability_scores` + `style_labels`: one scoring step per source (one backend pass gives both).

Incremental by construction: `score_source` looks every sample up in the score cache keyed by
(content_hash, scorer identity) and sends only new or changed samples to the backend; the `cached`
count in the metadata shows how much was reused.

Freshness is Dagster's: the step's code version is the scorer's identity (backend, model, options,
taxonomy, prompt version, input profile), so another scorer marks every source's scores stale; each
output's data version is the scorer identity and the raw pool's content version (plus the samples that
failed), so a re-ingest that changed nothing leaves them fresh.
"""

import time

import dagster as dg
import polars as pl

from mmssr_assets.executors import GPU_OP_TAGS
from mmssr_assets.metadata import counts_table, means_table, path_md, scorer_metadata
from mmssr_assets.partitions import GPU_POOL, OWNERS, SOURCE_BACKFILL_POLICY, sources_partitions
from mmssr_assets.resources import ScorerResource, SourcesResource, StoreResource
from mmssr_assets.versions import pool_version, scores_version
from mmssr_core.schema import CAPABILITY_TABLE, FAILURE_TABLE, STYLE_TABLE


class ScoringConfig(dg.Config):
    """Per-run knobs of scoring (set in the launchpad or `run_config`)."""

    batch_size: int = 8  # samples per backend call
    chunk_size: int = 256  # samples per cache flush (what a kill can lose at most)


def build_score_source(scorer: ScorerResource) -> dg.AssetsDefinition:
    """The scoring step, its code version taken from the scorer the definitions are built with."""
    common = dict(
        partitions_def=sources_partitions,
        deps=["raw_pool"],
        group_name="scoring",
        owners=OWNERS,
        code_version=f"scorer-{scorer.fingerprint()}",
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
                    "backend could not score are null here and listed in `score_failures/<source>.parquet`. "
                    "Stale when `raw_pool[<source>]` has new content or the scorer changed (code version = "
                    "scorer identity)."
                ),
                **common,
            ),
            dg.AssetSpec(
                "style_labels",
                kinds={"python", "parquet"},
                tags={"stage": "score"},
                description=(
                    "Ordered interaction-style labels (multi-label, within the taxonomy's label set) of every "
                    "accepted sample of a source: `style_labels/<source>.parquet`. Stale like capability_scores."
                ),
                **common,
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
        st = store.store()
        result = _run_backends(context, config, st, scorer)
        yield from _outputs(st, context.partition_key, result, scorer)
        context.log.info(f"score {context.partition_key}: {result.to_dict()}")

    return score_source_step


def _run_backends(context, config: ScoringConfig, st, scorer: ScorerResource):
    """Score one source with the scorer's backend (and the styles' own backend when it has one)."""
    from mmssr_core.scoring.split import score_source_split

    source = context.partition_key
    taxonomy = scorer.taxonomy()
    backend = scorer.get_backend()
    last_log = [0.0]

    def progress(p) -> None:
        now = time.monotonic()
        if now - last_log[0] > 5 or p.done == p.total:
            last_log[0] = now
            context.log.info(f"score {source}: {p.done}/{p.total} samples ({p.cached} cached) in {p.seconds:.1f}s")

    styles_backend = scorer.get_styles_backend()
    kw = dict(
        taxonomy=taxonomy,
        batch_size=config.batch_size,
        chunk_size=config.chunk_size,
        progress=progress,
        profile=scorer.profile,
    )
    try:  # a split scorer: capabilities from `backend`, styles from `styles_backend` (two caches)
        result = score_source_split(st, source, backend, styles_backend, **kw)
    finally:
        for b in (backend, styles_backend):
            close = getattr(b, "close", None)
            if close:
                close()
    return result


def _outputs(st, source: str, result, scorer: ScorerResource):
    """The two materializations, each with its data version: scorer identity + raw pool content + failures."""
    taxonomy = scorer.taxonomy()
    common = {
        "scored": result.scored,
        "cached": result.cached,
        "failed": result.failed,
        "total": result.total,
        "computed": result.computed,
        "seconds": round(result.seconds, 3),
        **scorer_metadata(result.identity, scorer.backends()),
    }
    if result.failures_by_reason:
        common["failures_by_reason"] = counts_table("reason", result.failures_by_reason)
    failures = st.read(FAILURE_TABLE, source) if st.exists(FAILURE_TABLE, source) else None
    pool = pool_version(st, source)

    def version(targets) -> dg.DataVersion:
        failed = [] if failures is None else failures.filter(targets)["id"].unique().to_list()
        # the label, the backend's digest (checkpoint revision, settings) and the configured identity
        identity = f"{result.identity}|{result.digest}|{scorer.fingerprint()}"
        return dg.DataVersion(scores_version(identity, pool, failed))

    caps = st.read(CAPABILITY_TABLE, source)
    keys = [k for k in taxonomy.keys if k in caps.columns]
    means = caps.select([pl.col(k).mean() for k in keys]).row(0) if keys and caps.height else [None] * len(keys)
    yield dg.MaterializeResult(
        asset_key="capability_scores",
        data_version=version(pl.col("target") != "styles"),
        metadata={
            **common,
            "dagster/row_count": caps.height,
            "path": path_md(st.path(CAPABILITY_TABLE, source)),
            "failures_path": path_md(st.path(FAILURE_TABLE, source)),
            "mean_scores": means_table(keys, means),
        },
    )
    styles = st.read(STYLE_TABLE, source)
    primary = (
        styles.select(pl.col("styles").list.first().alias("primary")).drop_nulls()["primary"].value_counts()
        if styles.height
        else pl.DataFrame({"primary": [], "count": []})
    )
    yield dg.MaterializeResult(
        asset_key="style_labels",
        data_version=version(pl.col("target") == "styles"),
        metadata={
            **common,
            "dagster/row_count": styles.height,
            "path": path_md(st.path(STYLE_TABLE, source)),
            "primary_styles": counts_table("primary style", dict(primary.rows()), "samples"),
        },
    )
