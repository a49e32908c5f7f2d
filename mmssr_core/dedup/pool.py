"""The raw pool read in batches with only the columns deduplication needs (memory stays flat).

Partitions ingested before image hashes existed have no `image_phashes` column: it reads as null,
so those samples take part in exact and text-only deduplication only (re-ingest to hash their images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import polars as pl

from mmssr_core.schema import RAW_POOL_SCHEMA, RAW_POOL_TABLE
from mmssr_core.store import Store, StoreError

COLUMNS = ("id", "source", "content_hash", "duplicate_of", "conversations", "images", "image_phashes")
BATCH_ROWS = 50_000


def pool_files(store: Store, sources: list[str] | None = None) -> list[Path]:
    """The committed raw-pool files of `sources` (default: all ingested), resolved now: two passes over
    them read the same rows even if a source is re-ingested in between."""
    names = sources if sources is not None else store.partitions(RAW_POOL_TABLE)
    files = []
    for source in names:
        if not store.exists(RAW_POOL_TABLE, source):
            raise StoreError(f"source {source!r} has no raw_pool partition under {store.root}")
        files.append(store.resolve(RAW_POOL_TABLE, source))
    return files


def file_batches(
    files: list[Path], batch_rows: int = BATCH_ROWS, columns: tuple[str, ...] = COLUMNS
) -> Iterator[pl.DataFrame]:
    """Batches of the given raw-pool files, in file order then row order."""
    import pyarrow.parquet as pq

    for path in files:
        pf = pq.ParquetFile(path)
        present = [c for c in columns if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=batch_rows, columns=present):
            df = pl.from_arrow(batch)
            missing = [pl.lit(None, RAW_POOL_SCHEMA[c]).alias(c) for c in columns if c not in df.columns]
            yield df.with_columns(missing).select(columns) if missing else df


def pool_batches(
    store: Store, sources: list[str] | None = None, batch_rows: int = BATCH_ROWS, columns: tuple[str, ...] = COLUMNS
) -> Iterator[pl.DataFrame]:
    """Batches of the raw pool of `sources` (default: all ingested), in source then file order."""
    yield from file_batches(pool_files(store, sources), batch_rows, columns)
