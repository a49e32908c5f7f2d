"""The pool-wide scores table (schema.scores_schema) that `mmssr select` reads, built against the current
raw pools: one row per sample that exists now, whatever the per-source score tables still hold.

Why against the pool: a re-ingest may remove or change samples after they were scored. Score rows whose
(id, content_hash) is no longer in the pool are dropped and counted as stale; pool rows without a score
are kept with nulls and counted as missing, so selection never picks an id that no longer exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import polars as pl

from mmssr_core.schema import (
    CAPABILITY_TABLE,
    RAW_POOL_TABLE,
    SCORER_COLUMN,
    STYLE_TABLE,
    argmax_column,
    scores_schema,
)
from mmssr_core.store import Store, StoreError
from mmssr_core.taxonomy import Taxonomy, load_taxonomy


@dataclass
class ScoresBuild:
    """The pool-wide scores table and what building it against the current raw pools found.

    stale: scored rows dropped because their id is no longer in the pool, or its content changed since;
    missing: pool rows without a current capability score (or without styles), kept with nulls.
    """

    table: pl.DataFrame
    stale: dict[str, int] = field(default_factory=dict)  # per source
    missing_scores: dict[str, int] = field(default_factory=dict)
    missing_styles: dict[str, int] = field(default_factory=dict)
    unpooled_sources: list[str] = field(default_factory=list)  # scored, but no raw pool any more

    def summary(self) -> dict:
        return {
            "stale_dropped": sum(self.stale.values()),
            "missing_scores": sum(self.missing_scores.values()),
            "missing_styles": sum(self.missing_styles.values()),
            "stale_by_source": self.stale,
            "missing_scores_by_source": self.missing_scores,
            "unpooled_sources": self.unpooled_sources,
        }


def build_scores_table(
    store: Store,
    sources: Sequence[str] | None = None,
    taxonomy: Taxonomy | None = None,
) -> pl.DataFrame:
    """The pool-wide scores table (schema.scores_schema): one row per sample of the current raw pools.

    See `build_scores` for the counts of what was dropped as stale and what is missing.
    """
    return build_scores(store, sources, taxonomy).table


def build_scores(
    store: Store,
    sources: Sequence[str] | None = None,
    taxonomy: Taxonomy | None = None,
) -> ScoresBuild:
    """Build the scores table of `sources` (default: every scored one) against their current raw pools.

    Score rows whose (id, content_hash) is not in the pool now are dropped and counted as stale (a re-ingest
    removed or changed the sample); pool rows without scores are kept with nulls and counted as missing, so
    `select` never picks an id that no longer exists and never silently loses one that does. Capabilities
    missing from a source's table (taxonomy grew since it was scored) are null; `scorer` names the
    capability scorer, plus the styler when it differs.
    """
    taxonomy = taxonomy or load_taxonomy()
    keys = taxonomy.keys
    schema = scores_schema(keys)
    if sources is None:
        sources = sorted(set(store.partitions(CAPABILITY_TABLE)) | set(store.partitions(STYLE_TABLE)))
    out = ScoresBuild(pl.DataFrame(schema=schema))
    frames = []
    for source in sources:
        has_c = store.exists(CAPABILITY_TABLE, source)
        has_s = store.exists(STYLE_TABLE, source)
        if not (has_c or has_s):
            raise StoreError(f"source {source!r} has not been scored (no {CAPABILITY_TABLE} or {STYLE_TABLE})")
        caps = store.read(CAPABILITY_TABLE, source) if has_c else None
        sty = store.read(STYLE_TABLE, source) if has_s else None
        if not store.exists(RAW_POOL_TABLE, source):
            out.unpooled_sources.append(source)
            out.stale[source] = max(len(caps) if caps is not None else 0, len(sty) if sty is not None else 0)
            continue
        base = store.read(RAW_POOL_TABLE, source).select("id", "source", "content_hash")
        df = _current_capabilities(base, caps, keys, out, source)
        df = _current_styles(df, sty, out, source)
        df = df.with_columns(
            pl.when(pl.col("_cap_scorer").is_null() & pl.col("_sty_scorer").is_null())
            .then(pl.lit(None, dtype=pl.Utf8))
            .when(pl.col("_cap_scorer").is_null())
            .then(pl.lit("styles:") + pl.col("_sty_scorer"))
            .when(pl.col("_sty_scorer").is_null() | (pl.col("_sty_scorer") == pl.col("_cap_scorer")))
            .then(pl.col("_cap_scorer"))
            .otherwise(pl.col("_cap_scorer") + pl.lit(" + styles:") + pl.col("_sty_scorer"))
            .alias(SCORER_COLUMN)
        )
        frames.append(df.select(list(schema)).cast(schema))
    if frames:
        out.table = pl.concat(frames, how="vertical")
    return out


def _current(base: pl.DataFrame, scored: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Rows of `scored` that match the pool now (id and, where recorded, content_hash), and how many did not."""
    on = ["id", "content_hash"] if "content_hash" in scored.columns else ["id"]
    scored = scored.unique(on, keep="last", maintain_order=True)
    current = scored.join(base.select(on), on=on, how="semi")
    return current, scored.height - current.height


def _current_capabilities(base: pl.DataFrame, caps: pl.DataFrame | None, keys, out: ScoresBuild, source: str):
    cols = [pl.col("id")]
    if caps is None:
        caps = pl.DataFrame(schema={"id": pl.Utf8, SCORER_COLUMN: pl.Utf8})
    for k in keys:
        cols.append(pl.col(k).cast(pl.Float64) if k in caps.columns else pl.lit(None, dtype=pl.Float64).alias(k))
        a = argmax_column(k)
        cols.append(pl.col(a).cast(pl.Int8) if a in caps.columns else pl.lit(None, dtype=pl.Int8).alias(a))
    cols.append(pl.col(SCORER_COLUMN).alias("_cap_scorer"))
    current, stale = _current(base, caps)
    out.stale[source] = stale
    df = base.join(current.select(cols), on="id", how="left", maintain_order="left")
    out.missing_scores[source] = int(df["_cap_scorer"].null_count())
    return df


def _current_styles(df: pl.DataFrame, sty: pl.DataFrame | None, out: ScoresBuild, source: str) -> pl.DataFrame:
    """Join the current style labels onto `df` (pool rows with their content_hash)."""
    if sty is None:
        out.missing_styles[source] = df.height
        return df.with_columns(
            pl.lit(None, dtype=pl.List(pl.Utf8)).alias("styles"), pl.lit(None, dtype=pl.Utf8).alias("_sty_scorer")
        )
    current, stale = _current(df.select("id", "content_hash"), sty)
    out.stale[source] = max(out.stale.get(source, 0), stale)
    joined = df.join(
        current.select("id", "styles", pl.col(SCORER_COLUMN).alias("_sty_scorer")),
        on="id",
        how="left",
        maintain_order="left",
    )
    out.missing_styles[source] = int(joined["_sty_scorer"].null_count())
    return joined
