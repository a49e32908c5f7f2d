"""`mmssr dedup --store DIR`: find exact and near duplicate groups of the ingested pool.

Writes `<store>/duplicates/<setting>.parquet` (one row per group member) and a JSON summary beside it;
`mmssr select --duplicates FILE` then keeps one sample per group.
"""

from __future__ import annotations

import sys

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line


def add_arguments(p) -> None:
    add_store_argument(p)
    p.add_argument("--source", action="append", help="only these ingested sources (repeatable; default: all)")
    p.add_argument("--exact-only", action="store_true", help="exact duplicates only (same content hash)")
    p.add_argument(
        "--text-threshold",
        type=float,
        default=None,
        help="near duplicates: minimum Jaccard of word 3-grams of the normalised text (default 0.8)",
    )
    p.add_argument(
        "--image-distance",
        type=int,
        default=None,
        help="near duplicates: maximum differing bits of each image's 64-bit perceptual hash (default 6)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def _config(args):
    from mmssr_core.dedup import DedupConfig, DedupConfigError

    settings: dict = {"near": not args.exact_only}
    if args.text_threshold is not None:
        settings["text_threshold"] = args.text_threshold
    if args.image_distance is not None:
        settings["image_distance"] = args.image_distance
    try:
        return DedupConfig(**settings)
    except DedupConfigError as exc:
        raise CommandError(str(exc)) from None


def run(args) -> int:
    from mmssr_core.commands._common import ingested_sources
    from mmssr_core.dedup.summary import pool_order_ranking, removal_summary
    from mmssr_core.dedup.table import write_duplicates

    config = _config(args)
    store = open_store(args)
    sources = ingested_sources(store, args.source)
    result = write_duplicates(
        store, config, sources, progress=lambda n: print(f"  {n:,} samples read", file=sys.stderr)
    )
    s = result.stats
    summary = removal_summary(pool_order_ranking(result.groups))
    print(
        f"{s['samples']:,} samples: {summary['groups']:,} duplicate groups ({summary['exact_groups']:,} exact, "
        f"{summary['near_groups']:,} near), {summary['removed']:,} samples to drop; {s['seconds']:.1f} s"
    )
    for row in summary["per_source"]:
        print(f"  {row['source']}: {row['in_groups']:,} in {row['groups']:,} groups")
    print(f"groups: {s['path']}")
    if args.json:
        print_json_line({**s, "summary": summary})
    return 0
