"""Accepted and quarantined rows -> Parquet, in batches, inside the source's uncommitted generation.

The file is private until the store transaction commits the generation, so it is written in place (no
temp file): a killed ingest leaves an uncommitted generation that the next writer removes.
"""

from __future__ import annotations

import os
from pathlib import Path

BATCH_ROWS = 2048


def arrow_schema(schema: dict):
    import polars as pl

    return pl.DataFrame(schema=schema).to_arrow().schema


class BatchWriter:
    """Rows -> Parquet in batches, into a file of the uncommitted generation (private until the commit)."""

    def __init__(self, path: Path, schema, batch_rows: int = BATCH_ROWS):
        import pyarrow.parquet as pq

        self.path = path
        self.schema = schema
        self.batch_rows = batch_rows
        self.writer = pq.ParquetWriter(str(path), schema, compression="zstd")
        self.names = schema.names
        self.columns: dict[str, list] = {n: [] for n in self.names}
        self.pending = 0

    def add(self, row: dict) -> None:
        # Columnar buffers: pa.array per column is ~10x faster than Table.from_pylist on row dicts.
        for name in self.names:
            self.columns[name].append(row[name])
        self.pending += 1
        if self.pending >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            arrays = [pa.array(self.columns[f.name], type=f.type) for f in self.schema]
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
            self.columns = {n: [] for n in self.names}
            self.pending = 0

    def close(self) -> None:
        """Finish the file and make it durable; the transaction's commit publishes it."""
        self.flush()
        self.writer.close()
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - best effort on an error path; the generation is discarded
            pass
