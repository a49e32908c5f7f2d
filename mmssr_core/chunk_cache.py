"""Append-only, chunked result caches (scores, teacher labels) and the flushing that fills them.

Why chunks of immutable files: a run may be killed at any moment (SIGKILL included). Each chunk is one
Parquet file written through the store's atomic write, so a chunk is either fully there or absent; a
restarted run reads every chunk and computes only what no chunk holds. Several processes may append to
the same identity at once (unique chunk names), and readers tolerate duplicates.

Layout: `<store>/<table>/<identity digest>/<uuid>.parquet` plus `identity.json` (for humans). Messages are
redacted before they are written, so no chunk ever holds a secret a server echoed.

`Flusher` decides when pending results go to a chunk: every `every` items, and at least every
`seconds` seconds (default DEFAULT_FLUSH_SECONDS, or $MMSSR_FLUSH_SECONDS), so a kill loses at most
that much work whatever the backend's speed.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable

import polars as pl

from mmssr_core.redact import redact
from mmssr_core.store import Store, atomic_write_bytes, atomic_write_parquet, remove_orphan_temps

ENV_FLUSH_SECONDS = "MMSSR_FLUSH_SECONDS"
DEFAULT_FLUSH_SECONDS = 15.0


def flush_seconds(value: float | None = None) -> float:
    """The flush interval: `value`, else $MMSSR_FLUSH_SECONDS, else DEFAULT_FLUSH_SECONDS."""
    if value is None:
        env = os.environ.get(ENV_FLUSH_SECONDS)
        try:
            value = float(env) if env else DEFAULT_FLUSH_SECONDS
        except ValueError:
            raise ValueError(f"${ENV_FLUSH_SECONDS} must be a number of seconds, got {env!r}") from None
    if not value > 0:
        raise ValueError(f"the flush interval must be positive, got {value!r}")
    return float(value)


class Flusher:
    """When to flush: `every` items pending, or `seconds` since the last flush with anything pending."""

    def __init__(self, every: int, seconds: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.every = max(1, int(every))
        self.seconds = flush_seconds(seconds)
        self.clock = clock
        self.last = clock()

    def due(self, pending: int) -> bool:
        return pending > 0 and (pending >= self.every or self.clock() - self.last >= self.seconds)

    def flushed(self) -> None:
        self.last = self.clock()


class ChunkCache:
    """The chunk files of one identity in one cache table; subclasses add what a row means."""

    schema: dict[str, pl.DataType] = {}
    message_columns: tuple[str, ...] = ("message",)

    def __init__(self, store: Store, table: str, digest: str, identity_body: dict):
        self.store = store
        self.dir = store.table_dir(table) / digest
        self._identity_body = identity_body
        self._swept = False

    def chunks(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        # temp files of interrupted writes start with "." and are never read
        return sorted(p for p in self.dir.glob("*.parquet") if not p.name.startswith("."))

    def _prepare_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self._swept:  # temp files of killed writers (this host's dead processes, or old ones)
            remove_orphan_temps(self.dir)
            self._swept = True
        meta = self.dir / "identity.json"
        if not meta.exists():
            atomic_write_bytes(meta, json.dumps(self._identity_body, indent=2, sort_keys=True).encode())

    def append_frame(self, df: pl.DataFrame) -> Path | None:
        """Write one chunk atomically (messages redacted); None when `df` is empty."""
        if df.is_empty():
            return None
        self._prepare_dir()
        path = self.dir / f"{uuid.uuid4().hex}.parquet"
        atomic_write_parquet(self._redacted(df).select(list(self.schema)).cast(self.schema), path)
        return path

    def _redacted(self, df: pl.DataFrame) -> pl.DataFrame:
        msgs = [c for c in self.message_columns if c in df.columns]
        if not msgs or df.is_empty():
            return df
        return df.with_columns(pl.col(c).map_elements(redact, return_dtype=pl.Utf8, skip_nulls=True) for c in msgs)

    def scan(self) -> pl.LazyFrame:
        files = self.chunks()
        if not files:
            return pl.LazyFrame(schema=self.schema)
        return pl.scan_parquet([str(p) for p in files], schema=self.schema)

    def compact(self, resolve_rows: Callable[[pl.DataFrame], pl.DataFrame]) -> Path | None:
        """Merge all chunks into one resolved chunk, then remove the old ones.

        Safe against a kill at any point: the merged chunk is written before anything is deleted, and
        readers tolerate the temporary duplicates. Not safe while another process appends (its chunk
        written between listing and deleting survives, since only listed files are removed).
        """
        files = self.chunks()
        if len(files) <= 1:
            return files[0] if files else None
        merged = resolve_rows(pl.scan_parquet([str(p) for p in files], schema=self.schema).collect())
        path = self.dir / f"{uuid.uuid4().hex}.parquet"  # redacted again: chunks from before redaction existed
        atomic_write_parquet(self._redacted(merged).select(list(self.schema)), path)
        for p in files:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        return path
