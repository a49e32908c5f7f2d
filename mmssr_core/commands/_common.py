"""Argument checks several subcommands share, each turning a bad value into a one-line CommandError."""

from __future__ import annotations

from pathlib import Path

from mmssr_core.cli import CommandError
from mmssr_core.schema import RAW_POOL_TABLE
from mmssr_core.store import Store
from mmssr_core.taxonomy import Taxonomy, TaxonomyError, load_taxonomy


def ingested_sources(store: Store, requested: list[str] | None) -> list[str]:
    """The requested sources (default: all ingested), each checked to exist in the store's raw pool."""
    available = store.partitions(RAW_POOL_TABLE)
    sources = requested or available
    if not sources:
        raise CommandError(f"no ingested sources under {store.root} (run `mmssr ingest` first)")
    missing = [s for s in sources if s not in available]
    if missing:
        raise CommandError(f"source(s) not ingested in {store.root}: {', '.join(missing)}")
    return list(sources)


def taxonomy_or_error(path: str | None) -> Taxonomy:
    try:
        return load_taxonomy(path)
    except TaxonomyError as exc:
        raise CommandError(str(exc)) from None


def read_parquet_file(path: str | Path, what: str, columns: list[str] | None = None):
    """A Parquet file the user named, as a polars DataFrame; with `columns`, only those present in it."""
    import polars as pl

    p = Path(path)
    if not p.is_file():
        raise CommandError(f"{what} file {p} does not exist")
    try:
        if columns is not None:
            schema = pl.read_parquet_schema(p)
            columns = [c for c in dict.fromkeys(columns) if c in schema]
        return pl.read_parquet(p, columns=columns)
    except Exception as exc:  # polars raises several types for unreadable files
        raise CommandError(f"cannot read {what} file {p} as Parquet: {exc}") from None
