"""`mmssr select --scores FILE.parquet --budget B [--budget B ...] --out DIR`: subsets from a scores table."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mmssr_core.cli import CommandError, print_json_line

METHODS = ("mmssr", "random", "mean", "capability-only", "style-only")


def add_arguments(p) -> None:
    p.add_argument("--scores", required=True, help="scores table (Parquet: id, source, styles, one column per capability)")
    p.add_argument("--budget", action="append", required=True, metavar="B",
                   help="a fraction (0.05), a percentage (5%%) or a count (1000); repeat for several budgets")
    p.add_argument("--method", default="mmssr", choices=METHODS, help="the mmSSR rule (default) or a baseline")
    p.add_argument("--capabilities", help="comma-separated capability keys, in order (default: all in the table)")
    p.add_argument("--threshold", type=float, default=0.0, help="a sample qualifies for a capability when its "
                                                                "score is above this (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tie key (hash of the id); default 0")
    p.add_argument("--taxonomy", help="taxonomy config (JSON/TOML); default $MMSSR_TAXONOMY or the paper's 14")
    p.add_argument("--duplicates", help="duplicate groups from `mmssr dedup` (store/duplicates/<setting>.parquet): "
                                        "select at most one sample per group; fractions stay of the whole table")
    p.add_argument("--out", required=True, help="output folder: one <method>_<B>.parquet per budget")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args) -> int:
    from mmssr_core.commands._common import read_parquet_file, taxonomy_or_error
    from mmssr_core.dedup.budget import select_deduplicated
    from mmssr_core.schema import argmax_column
    from mmssr_core.selection import SelectionInputError, budget_key
    from mmssr_core.store import atomic_write_parquet

    t0 = time.perf_counter()
    taxonomy = taxonomy_or_error(args.taxonomy)
    caps = None
    if args.capabilities is not None:
        caps = [c.strip() for c in args.capabilities.split(",") if c.strip()]
        if not caps:
            raise CommandError("--capabilities is empty")
    wanted = ["id", "source", "styles"] + (caps if caps is not None else taxonomy.keys)
    groups = read_parquet_file(args.duplicates, "duplicates") if args.duplicates else None
    if groups is not None:  # the integer scores pick each group's representative
        wanted += [argmax_column(k) for k in wanted[3:]]
    scores = read_parquet_file(args.scores, "scores", wanted)
    for b in args.budget:
        if "/" in b or "\\" in b or b.strip() != b or not b:
            raise CommandError(f"budget {b!r} is not a number")
    try:
        results, dedup = select_deduplicated(scores, args.budget, groups, method=args.method, capabilities=caps,
                                             threshold=args.threshold, seed=args.seed, taxonomy=taxonomy)
    except SelectionInputError as exc:
        raise CommandError(str(exc)) from None

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"method": args.method, "budgets": {}, "warnings": [], "rows": scores.height,
                     "threshold": args.threshold, "seed": args.seed}
    warnings: list[str] = []
    for b in args.budget:
        key = budget_key(b)
        sel = results[key]
        target = out / f"{args.method}_{key}.parquet"
        atomic_write_parquet(sel.frame, target)
        entry = sel.summary()
        entry["path"] = str(target)
        summary["budgets"][key] = entry
        for w in sel.warnings:
            if w not in warnings:
                warnings.append(w)
        status = f"SHORT: {sel.reason}" if sel.short else "ok"
        print(f"{args.method} {key}: selected {sel.selected:,} of {sel.requested:,} requested -> {target} ({status})")
        if sel.per_capability:
            print("  per capability: " + ", ".join(f"{k} {v:,}" for k, v in sel.per_capability.items()))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    summary["warnings"] = warnings
    if dedup is not None:
        summary["dedup"] = {"deduplicated_pool_size": dedup.deduplicated_size, **dedup.summary}
        print(f"duplicates: {dedup.summary['removed']:,} samples in {dedup.summary['groups']:,} groups left out; "
              f"{dedup.deduplicated_size:,} of {scores.height:,} candidates")
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    print(f"{len(results)} budget(s) from {scores.height:,} rows in {summary['seconds']:.2f} s")
    if args.json:
        print_json_line(summary)
    return 0
