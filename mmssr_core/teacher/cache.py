"""The teacher's answers, cached per (content_hash, teacher identity) in append-only chunks, so a killed
run loses at most its unflushed chunk and the next one asks only what is missing."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import polars as pl

from mmssr_core.chunk_cache import ChunkCache
from mmssr_core.schema import TEACHER_CACHE_TABLE
from mmssr_core.store import Store
from mmssr_core.teacher.prompt import TeacherIdentity

CACHE_SCHEMA: dict[str, pl.DataType] = {
    "content_hash": pl.Utf8,
    "answer": pl.Utf8,  # JSON {"scores": {...}, "styles": [...]} on success, else null
    "reason": pl.Utf8,  # failure code (null on success)
    "message": pl.Utf8,
    "asks": pl.Int32,
    "written_at": pl.Float64,
}


class TeacherCache(ChunkCache):
    """Append-only chunks `<store>/teacher_cache/<identity digest>/<uuid>.parquet` (mmssr_core.chunk_cache)."""

    schema = CACHE_SCHEMA

    def __init__(self, store: Store, identity: TeacherIdentity):
        body = dict(asdict(identity), digest=identity.digest, label=identity.label())
        super().__init__(store, TEACHER_CACHE_TABLE, identity.digest, body)
        self.identity = identity

    def append(self, rows: Sequence[dict]) -> Path | None:
        if not rows:
            return None
        now = time.time()
        recs = [
            {
                "content_hash": r["content_hash"],
                "answer": r.get("answer"),
                "reason": r.get("reason"),
                "message": r.get("message"),
                "asks": r.get("asks"),
                "written_at": now,
            }
            for r in rows
        ]
        return self.append_frame(pl.DataFrame(recs, schema=CACHE_SCHEMA))

    def resolved(self) -> pl.DataFrame:
        """One row per content_hash: the latest success, else the latest failure."""
        rows = self.scan().collect()
        if rows.is_empty():
            return rows
        rows = rows.with_columns(_ok=pl.col("answer").is_not_null()).sort(["_ok", "written_at"], maintain_order=True)
        return rows.group_by("content_hash", maintain_order=True).last().drop("_ok")
