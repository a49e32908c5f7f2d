"""The store: Parquet per asset per partition as the source of truth, DuckDB read-only views on top.

Why Parquet files and not one database: Dagster runs partitions in separate processes and DuckDB
allows one writer process at a time. Each partition is one file written to a temp name and renamed,
so concurrent writers of different partitions never collide and a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

import polars as pl

ENV_STORE = "MMSSR_STORE"
DEFAULT_STORE = "store"  # relative to the working directory

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600

_PARTITION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


class StoreError(RuntimeError):
    """A missing table or partition, or an invalid name."""


def default_store_root() -> Path:
    return Path(os.environ.get(ENV_STORE) or DEFAULT_STORE).resolve()


def check_name(name: str, what: str = "partition") -> str:
    """Partition and table names become file names: keep them safe and portable."""
    if not name or not _PARTITION_RE.match(name) or ".." in name:
        raise StoreError(
            f"invalid {what} name {name!r}: use letters, digits and . _ = + - (not starting with . or -)"
        )
    return name


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` via a temp file and a rename; `mode` (e.g. 0o644) overrides the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Write `df` to `path` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.write_parquet(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Store:
    """A folder of tables: `<root>/<table>/<partition>.parquet` (plus JSON sidecars).

    Tables used by the project: raw_pool, quarantine (per source); capability_scores, style_labels,
    score_failures (per source); score_cache (per scorer identity, chunked); selections and reports
    (per recipe).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).resolve() if root is not None else default_store_root()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.root / check_name(table, "table")

    def path(self, table: str, partition: str, suffix: str = ".parquet") -> Path:
        return self.table_dir(table) / f"{check_name(partition)}{suffix}"

    # -- parquet partitions ------------------------------------------------------------------
    def write(self, table: str, partition: str, df: pl.DataFrame) -> Path:
        path = self.path(table, partition)
        atomic_write_parquet(df, path)
        return path

    def exists(self, table: str, partition: str) -> bool:
        return self.path(table, partition).exists()

    def read(self, table: str, partition: str) -> pl.DataFrame:
        path = self.path(table, partition)
        if not path.exists():
            raise StoreError(f"no partition {partition!r} in table {table!r} under {self.root}")
        return pl.read_parquet(path)

    def scan(self, table: str, partitions: list[str] | None = None) -> pl.LazyFrame:
        """Lazily scan all (or the given) partitions of a table as one frame."""
        paths = [self.path(table, p) for p in (partitions or self.partitions(table))]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise StoreError(f"table {table!r} lacks partitions: {missing}")
        if not paths:
            raise StoreError(f"table {table!r} has no partitions under {self.root}")
        return pl.scan_parquet([str(p) for p in paths])

    def partitions(self, table: str) -> list[str]:
        d = self.table_dir(table)
        if not d.is_dir():
            return []
        return sorted(p.stem for p in d.glob("*.parquet") if not p.name.startswith("."))

    def delete(self, table: str, partition: str) -> None:
        for suffix in (".parquet", ".json"):
            p = self.path(table, partition, suffix)
            if p.exists():
                p.unlink()

    # -- JSON sidecars (small summaries: ingest stats, report summaries) ---------------------
    def write_json(self, table: str, partition: str, obj: dict) -> Path:
        path = self.path(table, partition, ".json")
        atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())
        return path

    def read_json(self, table: str, partition: str) -> dict:
        path = self.path(table, partition, ".json")
        if not path.exists():
            raise StoreError(f"no {table}/{partition}.json under {self.root}")
        return json.loads(path.read_text())

    # -- DuckDB ------------------------------------------------------------------------------
    def duckdb(self):
        """An in-memory DuckDB connection with one read-only view per table over its Parquet files.

        The Parquet files stay the source of truth; nothing is written to a database file, so any
        number of readers can query while partitions are being rewritten.
        """
        import duckdb

        con = duckdb.connect(":memory:")
        for table in self.tables():
            files = [str(self.path(table, p)) for p in self.partitions(table)]
            if files:
                quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                con.execute(f'CREATE VIEW "{table}" AS SELECT * FROM read_parquet([{quoted}], union_by_name=true)')
        return con

    def tables(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _PARTITION_RE.match(p.name))

    def iter_partitions(self, table: str) -> Iterator[tuple[str, Path]]:
        for p in self.partitions(table):
            yield p, self.path(table, p)
