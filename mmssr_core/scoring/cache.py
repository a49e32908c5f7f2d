"""The score cache: finished results keyed by (content_hash, scorer identity), flushed in chunks.

The chunk files, their atomicity and the redaction of messages are `mmssr_core.chunk_cache`'s; this module
says what a row means. Layout: `<store>/score_cache/<identity digest>/<uuid>.parquet` + `identity.json`.
One row per (content_hash, target): target is a capability key or "styles"; a success carries `dist`
(probabilities over the digits 0..5) or `labels` (ordered styles); a failure carries `reason`/`message`
and is never treated as done: the next run retries it.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from mmssr_core.chunk_cache import ChunkCache
from mmssr_core.schema import SCORE_CACHE_TABLE
from mmssr_core.scoring.base import ScorerIdentity
from mmssr_core.store import Store

CACHE_TABLE = SCORE_CACHE_TABLE
STYLES_TARGET = "styles"

CACHE_SCHEMA: dict[str, pl.DataType] = {
    "content_hash": pl.Utf8,
    "target": pl.Utf8,  # capability key or "styles"
    "dist": pl.List(pl.Float64),  # success of a capability target
    "labels": pl.List(pl.Utf8),  # success of the styles target
    "reason": pl.Utf8,  # failure code (null on success)
    "message": pl.Utf8,
    "written_at": pl.Float64,  # unix time; the latest success wins
}


class ChunkBuffer:
    """Results of one chunk, kept column-wise: building the frame from numpy is ~50x cheaper than from
    one dict per (sample, target), which matters at millions of rows."""

    def __init__(self) -> None:
        self.dist_hash: list[str] = []
        self.dist_target: list[str] = []
        self.dists: list[np.ndarray] = []
        self.label_hash: list[str] = []
        self.labels: list[list[str]] = []
        self.fail_hash: list[str] = []
        self.fail_target: list[str] = []
        self.fail_reason: list[str] = []
        self.fail_message: list[str] = []

    def __len__(self) -> int:
        return len(self.dist_hash) + len(self.label_hash) + len(self.fail_hash)

    def add_dist(self, content_hash: str, target: str, dist: np.ndarray) -> None:
        self.dist_hash.append(content_hash)
        self.dist_target.append(target)
        self.dists.append(dist)

    def add_labels(self, content_hash: str, labels: list[str]) -> None:
        self.label_hash.append(content_hash)
        self.labels.append(list(labels))

    def add_failure(self, content_hash: str, target: str, reason: str, message: str = "") -> None:
        self.fail_hash.append(content_hash)
        self.fail_target.append(target)
        self.fail_reason.append(reason)
        self.fail_message.append(message)

    def clear(self) -> None:
        self.__init__()

    @classmethod
    def from_rows(cls, rows: Iterable[dict]) -> "ChunkBuffer":
        buf = cls()
        for r in rows:
            if r.get("dist") is not None:
                buf.add_dist(r["content_hash"], r["target"], np.asarray(r["dist"], dtype=np.float64))
            elif r.get("labels") is not None:
                buf.add_labels(r["content_hash"], [str(x) for x in r["labels"]])
            else:
                buf.add_failure(r["content_hash"], r["target"], r.get("reason") or "unknown", r.get("message") or "")
        return buf

    def frame(self, written_at: float) -> pl.DataFrame:
        parts = []
        if self.dist_hash:
            dist = pl.Series("dist", np.vstack(self.dists).astype(np.float64)).cast(pl.List(pl.Float64))
            parts.append(pl.DataFrame({"content_hash": self.dist_hash, "target": self.dist_target}).with_columns(dist))
        if self.label_hash:
            parts.append(
                pl.DataFrame(
                    {
                        "content_hash": self.label_hash,
                        "target": [STYLES_TARGET] * len(self.label_hash),
                        "labels": pl.Series(self.labels, dtype=pl.List(pl.Utf8)),
                    }
                )
            )
        if self.fail_hash:
            parts.append(
                pl.DataFrame(
                    {
                        "content_hash": self.fail_hash,
                        "target": self.fail_target,
                        "reason": self.fail_reason,
                        "message": self.fail_message,
                    }
                )
            )
        df = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame(schema=CACHE_SCHEMA)
        df = df.with_columns(
            [pl.lit(None, dtype=t).alias(c) for c, t in CACHE_SCHEMA.items() if c not in df.columns]
        ).with_columns(pl.lit(written_at, dtype=pl.Float64).alias("written_at"))
        return df.select(list(CACHE_SCHEMA)).cast(CACHE_SCHEMA)


def _ok_expr() -> pl.Expr:
    return pl.col("dist").is_not_null() | pl.col("labels").is_not_null()


class ScoreCache(ChunkCache):
    """Append-only chunked cache of one scorer identity."""

    schema = CACHE_SCHEMA

    def __init__(self, store: Store, identity: ScorerIdentity):
        body = dict(asdict(identity), digest=identity.digest, label=identity.label())
        super().__init__(store, CACHE_TABLE, identity.digest, body)
        self.identity = identity

    def append(self, rows: "Iterable[dict] | ChunkBuffer") -> Path | None:
        """Write one chunk atomically. Rows: content_hash, target, and dist | labels | reason(+message)."""
        buf = rows if isinstance(rows, ChunkBuffer) else ChunkBuffer.from_rows(rows)
        if not len(buf):
            return None
        return self.append_frame(buf.frame(time.time()))

    # -- reading -----------------------------------------------------------------------------
    def lookup(self, content_hashes: Iterable[str] | pl.Series | None = None) -> pl.DataFrame:
        """All cache rows for these hashes (all hashes when None), unresolved: use `resolve` next."""
        lf = self.scan()
        if content_hashes is not None:
            keys = pl.DataFrame({"content_hash": pl.Series(list(content_hashes), dtype=pl.Utf8)}).unique()
            lf = lf.join(keys.lazy(), on="content_hash", how="semi")
        return lf.collect()

    def _for(self, keys: pl.DataFrame, targets: Sequence[str] | None) -> pl.LazyFrame:
        lf = self.scan().join(keys.select("content_hash").unique().lazy(), on="content_hash", how="semi")
        if targets is not None:
            lf = lf.filter(pl.col("target").is_in(list(targets)))
        return lf

    def done(self, keys: pl.DataFrame, targets: Sequence[str] | None = None) -> pl.DataFrame:
        """The (content_hash, target) pairs of `keys` that hold a success: what a run need not redo.
        Reads only the two key columns, so it stays light on a large cache."""
        return self._for(keys, targets).filter(_ok_expr()).select("content_hash", "target").unique().collect()

    def results(self, keys: pl.DataFrame, targets: Sequence[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(successes, failures) of `keys`: the latest success per (content_hash, target) with `dist` or
        `labels`, and for pairs without any success the latest failure with `reason` and `message`."""
        lf = self._for(keys, targets)
        ok = (
            lf.filter(_ok_expr())
            .group_by("content_hash", "target")
            .agg(pl.col("dist", "labels").sort_by("written_at").last())
            .collect()
        )
        bad = (
            lf.filter(~_ok_expr())
            .join(ok.lazy().select("content_hash", "target"), on=["content_hash", "target"], how="anti")
            .group_by("content_hash", "target")
            .agg(pl.col("reason", "message").sort_by("written_at").last())
            .collect()
        )
        return ok, bad

    def compact(self) -> Path | None:
        """Merge all chunks into one resolved chunk (see ChunkCache.compact)."""
        return super().compact(lambda rows: resolve(rows, keep_failures=True))


def resolve(rows: pl.DataFrame, *, keep_failures: bool = True) -> pl.DataFrame:
    """One row per (content_hash, target): the latest success, else (if kept) the latest failure."""
    if rows.is_empty():
        return rows
    rows = rows.with_columns(_ok=_ok_expr()).sort(["_ok", "written_at"], maintain_order=True)
    # after sorting, the last row of a key is its latest success when one exists
    out = rows.group_by(["content_hash", "target"], maintain_order=True).last()
    if not keep_failures:
        out = out.filter(pl.col("_ok"))
    return out.drop("_ok")


def successes(resolved: pl.DataFrame) -> pl.DataFrame:
    return resolved.filter(_ok_expr()) if not resolved.is_empty() else resolved


def failures(resolved: pl.DataFrame) -> pl.DataFrame:
    return resolved.filter(~_ok_expr()) if not resolved.is_empty() else resolved
