"""`mmssr scores`: write the pool-wide scores table (DESIGN.md 2.2) that `mmssr select` reads."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmssr_core.cli import CommandError, print_json_line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="store root folder")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--source", action="append", help="only these sources (repeatable; default: every scored one)")
    p.add_argument("--taxonomy", help="taxonomy config file (JSON/TOML); default $MMSSR_TAXONOMY or the paper's")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from mmssr_core.scoring.runner import build_scores_table
    from mmssr_core.store import Store, StoreError, atomic_write_parquet
    from mmssr_core.taxonomy import TaxonomyError, load_taxonomy

    store = Store(args.store)
    try:
        taxonomy = load_taxonomy(args.taxonomy)
        table = build_scores_table(store, args.source, taxonomy)
    except (StoreError, TaxonomyError) as exc:
        raise CommandError(str(exc)) from None
    if table.is_empty() and not args.source:
        raise CommandError(f"nothing scored under {store.root} (run `mmssr score` first)")
    out = Path(args.out)
    atomic_write_parquet(table, out)
    keys = taxonomy.keys
    incomplete = table.filter(pl.any_horizontal([pl.col(k).is_null() for k in keys]) | pl.col("styles").is_null()).height
    summary = {
        "out": str(out.resolve()),
        "rows": table.height,
        "sources": sorted(table["source"].unique().to_list()),
        "incomplete": incomplete,
        "capabilities": len(keys),
        "scorers": sorted(x for x in table["scorer"].unique().to_list() if x is not None),
    }
    if args.json:
        print_json_line(summary)
    else:
        print(f"wrote {table.height} rows from {len(summary['sources'])} source(s) to {out} ({incomplete} incomplete)")
    return 0
