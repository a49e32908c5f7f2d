"""The store's `duplicates` table: one partition of groups per deduplication setting.

The Dagster asset and `mmssr dedup` both call `write_duplicates`; selection reads the partition of its
recipe's setting with `read_duplicates`.
"""

from __future__ import annotations

from typing import Callable

import polars as pl

from mmssr_core.dedup.config import DedupConfig
from mmssr_core.dedup.groups import DedupResult, find_duplicates
from mmssr_core.dedup.pool import file_batches, pool_files
from mmssr_core.schema import DUPLICATES_SCHEMA, DUPLICATES_TABLE
from mmssr_core.store import Store, StoreError


def write_duplicates(
    store: Store, config: DedupConfig, sources: list[str], progress: Callable[[int], None] | None = None
) -> DedupResult:
    """Find the duplicate groups of `sources` and write `duplicates/<config.key>` (+ .json stats)."""
    if not config.enabled:
        raise ValueError("deduplication is switched off in this setting")
    files = pool_files(store, sorted(sources))  # both passes read these very files
    result = find_duplicates(lambda: file_batches(files), config, progress=progress)
    result.stats["sources"] = sorted(sources)
    result.stats["path"] = str(store.write(DUPLICATES_TABLE, config.key, result.groups))
    store.write_json(DUPLICATES_TABLE, config.key, result.stats)
    return result


def read_duplicates(store: Store, config: DedupConfig, sources: list[str] | None = None) -> pl.DataFrame:
    """The groups written for `config`; raises StoreError naming what to run when they are missing, or,
    with `sources`, when they were computed over other sources (stale after a new source was scored)."""
    if not store.exists(DUPLICATES_TABLE, config.key):
        raise StoreError(
            f"no duplicate groups for the setting {config.key!r} under {store.root}: "
            f"materialize the duplicates asset (or run `mmssr dedup`) first"
        )
    if sources is not None:
        done = store.read_json(DUPLICATES_TABLE, config.key).get("sources")
        if done is not None and sorted(done) != sorted(sources):
            raise StoreError(
                f"the duplicate groups {config.key!r} cover sources {sorted(done)}, the scores "
                f"table {sorted(sources)}: materialize the duplicates asset again"
            )
    df = store.read(DUPLICATES_TABLE, config.key)
    missing = [c for c in DUPLICATES_SCHEMA if c not in df.columns]
    if missing:
        raise StoreError(f"{DUPLICATES_TABLE}/{config.key} lacks columns {missing}")
    return df


def duplicates_stats(store: Store, config: DedupConfig) -> dict:
    return store.read_json(DUPLICATES_TABLE, config.key)
