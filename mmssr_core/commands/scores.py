"""`mmssr scores`: write the pool-wide scores table that `mmssr select` reads, built against the current
raw pools: scores of samples a re-ingest removed or changed are dropped (and counted), samples without
scores are kept with nulls (and counted), so `select` only ever sees ids that exist now."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_store_argument(p)
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--source", action="append", help="only these sources (repeatable; default: every scored one)")
    p.add_argument("--taxonomy", help="taxonomy config file (JSON/TOML); default $MMSSR_TAXONOMY or the paper's")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from mmssr_core.scoring.runner import build_scores
    from mmssr_core.store import StoreError, atomic_write_parquet
    from mmssr_core.taxonomy import TaxonomyError, load_taxonomy

    store = open_store(args)
    try:
        taxonomy = load_taxonomy(args.taxonomy)
        built = build_scores(store, args.source, taxonomy)
        table = built.table
    except (StoreError, TaxonomyError) as exc:
        raise CommandError(str(exc)) from None
    if table.is_empty() and not args.source:
        raise CommandError(f"nothing scored under {store.root} (run `mmssr score` first)")
    out = Path(args.out)
    atomic_write_parquet(table, out)
    keys = taxonomy.keys
    incomplete = table.filter(
        pl.any_horizontal([pl.col(k).is_null() for k in keys]) | pl.col("styles").is_null()
    ).height
    summary = {
        "out": str(out.resolve()),
        "rows": table.height,
        "sources": sorted(table["source"].unique().to_list()),
        "incomplete": incomplete,
        "capabilities": len(keys),
        "scorers": sorted(x for x in table["scorer"].unique().to_list() if x is not None),
        **built.summary(),
    }
    if args.json:
        print_json_line(summary)
    else:
        print(
            f"wrote {table.height} rows from {len(summary['sources'])} source(s) to {out} ({incomplete} incomplete: "
            f"{summary['missing_scores']} without capability scores, {summary['missing_styles']} without styles)"
        )
        if summary["stale_dropped"]:
            print(
                f"dropped {summary['stale_dropped']} stale score row(s) whose sample is no longer in the current "
                f"raw pool or changed since it was scored (run `mmssr score` to score the current pool)"
            )
        if built.unpooled_sources:
            print(f"left out source(s) with scores but no raw pool: {', '.join(built.unpooled_sources)}")
    return 0
