"""Commit several tables' files of one partition as one unit, switched by a single rename.

A source's raw pool, quarantine and ingest stats belong together (as do a scored source's capability
scores, style labels and failures): a reader must see all of them from one run. Each commit therefore
writes a new *generation* folder, then makes it current by renaming one symlink:

    <store>/.units/<unit>/<partition>/
        lock                     the unit's writer lock (see mmssr_core.locks)
        current -> g00000007     the only thing a commit changes in place (one atomic rename)
        g00000006/               the previous generation, kept so a reader that just resolved it can finish
        g00000007/raw_pool/<partition>.parquet, quarantine/<partition>.parquet, ingest_stats/<partition>.json

The familiar paths `<store>/<table>/<partition>.parquet` are symlinks through `current`, so every reader
(DuckDB, Polars, a person's shell) keeps using them and sees the old set or the new one. A kill before the
rename leaves the old generation current; the new folder is an orphan the next writer removes.
Tables not written in a commit are carried over from the current generation by hard link (copy where the
filesystem has none).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from mmssr_core.locks import FileLock, LockBusy

UNITS_DIR = ".units"
CURRENT = "current"
SUFFIXES = (".parquet", ".json")


def gen_name(n: int) -> str:
    return f"g{n:08d}"


def gen_number(name: str) -> int | None:
    if len(name) == 9 and name[0] == "g" and name[1:].isdigit():
        return int(name[1:])
    return None


def current_generation(unit_dir: Path) -> Path | None:
    """The committed generation folder of a unit, or None before its first commit."""
    try:
        target = os.readlink(unit_dir / CURRENT)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return unit_dir / target


class Transaction:
    """One writer's change to one unit (all its tables of one partition); commit on a clean `with` exit.

    Use through `Store.transaction`. `path(table)` is where to write a table's new file (inside the
    uncommitted generation, so writing it directly is safe); `current(table)` is the committed file, for
    read-modify-write under the lock.
    """

    def __init__(self, store: Any, unit: str, tables: tuple[str, ...], partition: str, wait: float | None):
        self.store = store
        self.unit = unit
        self.tables = tables
        self.partition = partition
        self.dir = store.root / UNITS_DIR / unit / partition
        self.lock = FileLock(self.dir / "lock", wait=wait, what=f"{unit} {partition!r} under {store.root}")
        self.new: Path | None = None
        self.old: Path | None = None
        self._deleted: set[tuple[str, str]] = set()

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "Transaction":
        from mmssr_core.store import StoreBusy

        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except LockBusy as exc:
            raise StoreBusy(str(exc)) from None
        try:
            self._recover()
            self.old = current_generation(self.dir)
            number = (gen_number(self.old.name) or 0) + 1 if self.old is not None else 1
            self.new = self.dir / gen_name(number)
            self.new.mkdir()
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
            elif self.new is not None:
                shutil.rmtree(self.new, ignore_errors=True)
        finally:
            self.lock.release()

    def _recover(self) -> None:
        """Under the lock: remove what killed writers left (uncommitted generations, temp files)."""
        from mmssr_core.store import remove_orphan_temps

        old = current_generation(self.dir)
        keep = {old.name} if old is not None else set()
        prev = _previous(self.dir, old)
        if prev is not None:
            keep.add(prev.name)
        for p in self.dir.iterdir():
            if gen_number(p.name) is not None and p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
        remove_orphan_temps(self.dir, everything=True)
        for table in self.tables:
            remove_orphan_temps(self.store.table_dir(table), prefix=f"{self.partition}.", everything=True)
        if old is None:
            self._adopt_plain_files()

    def _adopt_plain_files(self) -> None:
        """A store written before generations: make its plain files generation 0 (content unchanged), so
        the first commit after an upgrade is a single switch like any other."""
        plain = [
            (t, s) for t in self.tables for s in SUFFIXES if (p := self._link(t, s)).exists() and not p.is_symlink()
        ]
        if not plain:
            return
        g0 = self.dir / gen_name(0)
        shutil.rmtree(g0, ignore_errors=True)
        for table, suffix in plain:
            _link_or_copy(self._link(table, suffix), self._file(g0, table, suffix))
        self._switch(g0)
        for table, suffix in plain:
            self._ensure_link(table, suffix)

    # -- paths ---------------------------------------------------------------------------------
    def _file(self, gen: Path, table: str, suffix: str) -> Path:
        return gen / table / f"{self.partition}{suffix}"

    def _link(self, table: str, suffix: str) -> Path:
        return self.store.table_dir(table) / f"{self.partition}{suffix}"

    def path(self, table: str, suffix: str = ".parquet") -> Path:
        """Where the new file of `table` goes (its folder exists)."""
        self._check(table)
        p = self._file(self.new, table, suffix)
        p.parent.mkdir(parents=True, exist_ok=True)
        self._deleted.discard((table, suffix))
        return p

    def current(self, table: str, suffix: str = ".parquet") -> Path | None:
        """The committed file of `table`, or None."""
        self._check(table)
        if self.old is None:
            return None
        p = self._file(self.old, table, suffix)
        return p if p.exists() else None

    def _check(self, table: str) -> None:
        if table not in self.tables:
            raise ValueError(f"table {table!r} is not part of the {self.unit} unit {self.tables}")

    # -- writing -------------------------------------------------------------------------------
    def write(self, table: str, df: pl.DataFrame) -> Path:
        from mmssr_core.store import atomic_write_parquet

        atomic_write_parquet(df, self.path(table))
        return self._link(table, ".parquet")

    def write_json(self, table: str, obj: dict) -> Path:
        from mmssr_core.store import atomic_write_bytes

        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        atomic_write_bytes(self.path(table, ".json"), data)
        return self._link(table, ".json")

    def read(self, table: str) -> pl.DataFrame | None:
        p = self.current(table)
        return pl.read_parquet(p) if p is not None else None

    def delete(self, table: str) -> None:
        self._check(table)
        for suffix in SUFFIXES:
            self._deleted.add((table, suffix))
            p = self._file(self.new, table, suffix)
            if p.exists():
                p.unlink()

    # -- commit --------------------------------------------------------------------------------
    def commit(self) -> None:
        """Carry unchanged tables over, make the new generation durable, switch `current` to it."""
        from mmssr_core.store import fsync_dir

        present = []
        for table in self.tables:
            for suffix in SUFFIXES:
                target = self._file(self.new, table, suffix)
                if (table, suffix) in self._deleted:
                    continue
                if not target.exists():
                    old = self.current(table, suffix)
                    if old is None:
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(old, target)
                present.append((table, suffix))
                fsync_dir(target.parent)
        fsync_dir(self.new)
        for table, suffix in present:  # links go through `current`: until the switch they show the old files
            self._ensure_link(table, suffix)
        self._switch(self.new)
        for table, suffix in self._deleted:
            link = self._link(table, suffix)
            if link.is_symlink():
                link.unlink()
        keep = {self.new.name} | ({self.old.name} if self.old is not None else set())
        for p in self.dir.iterdir():
            if gen_number(p.name) is not None and p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)

    def _switch(self, gen: Path) -> None:
        from mmssr_core.store import atomic_symlink, fsync_dir

        atomic_symlink(gen.name, self.dir / CURRENT)  # the commit point
        fsync_dir(self.dir)

    def _ensure_link(self, table: str, suffix: str) -> None:
        from mmssr_core.store import atomic_symlink

        link = self._link(table, suffix)
        target = os.path.relpath(self.dir / CURRENT / table / link.name, link.parent)
        try:
            if os.readlink(link) == target:
                return
        except OSError:
            pass
        atomic_symlink(target, link)


def _previous(unit_dir: Path, current: Path | None) -> Path | None:
    if current is None:
        return None
    n = gen_number(current.name)
    older = sorted(p for p in unit_dir.iterdir() if (m := gen_number(p.name)) is not None and n is not None and m < n)
    return older[-1] if older else None


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # no hard links here (some network and FUSE filesystems): copy
        shutil.copy2(src, dst)


__all__ = ["Transaction", "current_generation"]
