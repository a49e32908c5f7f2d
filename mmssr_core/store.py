"""The store: Parquet per asset per partition as the source of truth, DuckDB read-only views on top.

Why Parquet files and not one database: Dagster runs partitions in separate processes and DuckDB
allows one writer process at a time. Each partition is one file written to a temp name and renamed,
so concurrent writers of different partitions never collide and a crash never leaves half a file.
Files that belong together (a source's pool, quarantine and stats) are committed as one unit by
`Store.transaction`; temp files of killed writers are removed by the next writer.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

import polars as pl

from mmssr_core.schema import COMMIT_UNITS, UNIT_OF_TABLE

ENV_STORE = "MMSSR_STORE"
DEFAULT_STORE = "store"  # relative to the working directory
TEMP_SUFFIX = ".tmp"
ORPHAN_AGE_SECONDS = 24 * 3600  # a temp file this old is an orphan whoever wrote it
WRITE_WAIT_SECONDS = 600.0  # how long a plain write waits for a unit's lock

_PARTITION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
# temp name: .<final name>.<host>.<pid>.<random>.tmp (host and pid tell whether its writer is alive)
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")


class StoreError(RuntimeError):
    """A missing table or partition, or an invalid name."""


class StoreBusy(StoreError):
    """Another process is writing the same unit (a source being ingested, a recipe being selected)."""


def default_store_root() -> Path:
    return Path(os.environ.get(ENV_STORE) or DEFAULT_STORE).resolve()


def check_name(name: str, what: str = "partition") -> str:
    """Partition and table names become file names: keep them safe and portable."""
    if not name or not _PARTITION_RE.match(name) or ".." in name:
        raise StoreError(f"invalid {what} name {name!r}: use letters, digits and . _ = + - (not starting with . or -)")
    return name


# -- the one atomic-write helper ---------------------------------------------------------------
def temp_path(path: Path) -> Path:
    """A hidden temp name next to `path` naming this host and process (see `remove_orphan_temps`)."""
    return path.parent / f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable across a power cut (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, durable: bool = True) -> Path:
    """Write a file so that readers see the old content or the new, never a part.

    `write(tmp)` fills a temp file created beside `path` (mode 0666 less the umask, like `open`; it may
    also replace it, e.g. by a hard link), which is then fsynced and renamed over `path`. On any failure the
    temp file is removed; after a kill it is an orphan that `remove_orphan_temps` deletes on the next run.
    `durable=False` skips the fsyncs, for files that are cheap to make again (an export's image copies):
    still never half a file, but a power cut may lose the latest ones.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(str(tmp))
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_symlink(target: str, link: str | os.PathLike) -> Path:
    """Point `link` at `target`: a new link under a temp name renamed over the old, so a reader follows
    the old target or the new one, never none. The caller fsyncs the folder where that must survive."""
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(link)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return link


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    """`atomic_write` of bytes; `mode` (e.g. 0o644 for files other users read) overrides the umask."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)

    return atomic_write(path, write)


def atomic_write_parquet(df: pl.DataFrame, path: str | os.PathLike) -> Path:
    """Write `df` to `path` via a temp file in the same folder and an atomic rename."""
    return atomic_write(path, df.write_parquet)


def remove_orphan_temps(folder: str | os.PathLike, *, prefix: str = "", everything: bool = False) -> list[Path]:
    """Delete temp files left in `folder` by killed writers; returns what was removed.

    A temp file is an orphan when its writer (named in it) is a process of this host that no longer runs,
    or when it is older than ORPHAN_AGE_SECONDS. `everything`: the caller holds the lock that every writer
    of these names takes, so every matching temp file is an orphan. `prefix` limits to names starting so.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for p in folder.iterdir():
        name = p.name
        if not (name.startswith("." + prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        try:
            if not (everything or _temp_is_orphan(name, p.lstat().st_mtime, now)):
                continue
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            continue
    return removed


def _temp_is_orphan(name: str, mtime: float, now: float) -> bool:
    if now - mtime > ORPHAN_AGE_SECONDS:
        return True
    m = _TEMP_RE.match(name)
    if m is None or m["host"] != _HOST:
        return False  # another host's writer (or an old-style name): only age tells
    pid = int(m["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Store:
    """A folder of tables: `<root>/<table>/<partition>.parquet` (plus JSON sidecars).

    Tables are named in `mmssr_core.schema`. Tables grouped in a commit unit (schema.COMMIT_UNITS: a
    source's raw pool, quarantine and stats; a scored source's tables; a selection) are written through
    `transaction`, which commits all their files of one partition at once; their familiar paths are
    symlinks through the unit's current generation (see `mmssr_core.generations`).
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

    def resolve(self, table: str, partition: str, suffix: str = ".parquet") -> Path:
        """The file behind `path` as committed now: paths resolved together come from one commit (read a
        unit's tables through this when they must agree), and the file stays while one newer commit lands."""
        return Path(os.path.realpath(self.path(table, partition, suffix)))

    # -- commit units ------------------------------------------------------------------------
    def transaction(self, unit: str, partition: str, *, wait: float | None = WRITE_WAIT_SECONDS):
        """Lock one unit partition and stage new files for its tables; commit them together on exit.

        Raises `LockBusy` when another process holds it for longer than `wait` seconds (0: at once).
        """
        from mmssr_core.generations import Transaction

        if unit not in COMMIT_UNITS:
            raise StoreError(f"unknown commit unit {unit!r}; expected one of {sorted(COMMIT_UNITS)}")
        for table in COMMIT_UNITS[unit]:
            self.table_dir(table)
        return Transaction(self, unit, COMMIT_UNITS[unit], check_name(partition), wait)

    # -- parquet partitions ------------------------------------------------------------------
    def write(self, table: str, partition: str, df: pl.DataFrame) -> Path:
        unit = UNIT_OF_TABLE.get(table)
        if unit is not None:
            with self.transaction(unit, partition) as tx:
                return tx.write(table, df)
        path = self.path(table, partition)
        atomic_write_parquet(df, path)
        return path

    def exists(self, table: str, partition: str) -> bool:
        return self.path(table, partition).exists()

    def read(self, table: str, partition: str) -> pl.DataFrame:
        path = self.path(table, partition)
        if not path.exists():
            raise StoreError(f"no partition {partition!r} in table {table!r} under {self.root}")
        return pl.read_parquet(self.resolve(table, partition))

    def scan(self, table: str, partitions: list[str] | None = None) -> pl.LazyFrame:
        """Lazily scan all (or the given) partitions of a table as one frame."""
        paths = [self.path(table, p) for p in (partitions or self.partitions(table))]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise StoreError(f"table {table!r} lacks partitions: {missing}")
        if not paths:
            raise StoreError(f"table {table!r} has no partitions under {self.root}")
        return pl.scan_parquet([os.path.realpath(p) for p in paths])

    def partitions(self, table: str) -> list[str]:
        d = self.table_dir(table)
        if not d.is_dir():
            return []
        return sorted(p.stem for p in d.glob("*.parquet") if not p.name.startswith(".") and p.exists())

    def delete(self, table: str, partition: str) -> None:
        unit = UNIT_OF_TABLE.get(table)
        if unit is not None:
            with self.transaction(unit, partition) as tx:
                tx.delete(table)
            return
        for suffix in (".parquet", ".json"):
            p = self.path(table, partition, suffix)
            if p.exists():
                p.unlink()

    # -- JSON sidecars (small summaries: ingest stats, report summaries) ---------------------
    def write_json(self, table: str, partition: str, obj: dict) -> Path:
        unit = UNIT_OF_TABLE.get(table)
        if unit is not None:
            with self.transaction(unit, partition) as tx:
                return tx.write_json(table, obj)
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
