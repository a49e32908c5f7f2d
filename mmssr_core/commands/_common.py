"""Argument checks several subcommands share, each turning a bad value into a one-line CommandError."""

from __future__ import annotations

from mmssr_core.cli import CommandError
from mmssr_core.store import Store
from mmssr_core.taxonomy import Taxonomy, TaxonomyError, load_taxonomy


def ingested_sources(store: Store, requested: list[str] | None) -> list[str]:
    """The requested sources (default: all ingested), each checked to exist in the store's raw pool."""
    available = store.partitions("raw_pool")
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
