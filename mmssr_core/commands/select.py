"""`mmssr select --scores FILE.parquet --budget B [--budget B ...] --out DIR`: subsets from a scores table."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mmssr_core.cli import CommandError, print_json_line


def add_arguments(p) -> None:
    from mmssr_core.selection import METHODS, RANK_MODES

    p.add_argument(
        "--scores",
        required=True,
        help="scores table (Parquet: id, source, styles, per capability the "
        "expected score <key> and the integer score <key>__argmax)",
    )
    p.add_argument(
        "--budget",
        action="append",
        required=True,
        metavar="B",
        help="a fraction (0.05), a percentage (5%%) or a whole count (1000): digits, one decimal point "
        "and an optional %% only; repeat for several budgets",
    )
    p.add_argument("--method", default="mmssr", choices=METHODS, help="the mmSSR rule (default) or a baseline")
    p.add_argument("--capabilities", help="comma-separated capability keys, in order (default: all in the table)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="a sample qualifies for a capability when its score is above this (default 0)",
    )
    p.add_argument(
        "--rank",
        default="integer",
        choices=RANK_MODES,
        help="integer (default, the paper's rule): the integer score decides eligibility and rank, the "
        "expected score breaks ties; expected (opt-in): rank and threshold on the expected score",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the tie key (hash of the id); default 0")
    p.add_argument("--taxonomy", help="taxonomy config (JSON/TOML); default $MMSSR_TAXONOMY or the paper's 14")
    p.add_argument(
        "--duplicates",
        help="duplicate groups from `mmssr dedup` (store/duplicates/<setting>.parquet): "
        "select at most one sample per group; fractions stay of the whole table",
    )
    p.add_argument("--out", required=True, help="output folder: one <method>_<B>.parquet per budget")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args) -> int:
    from mmssr_core.commands._common import read_parquet_file, taxonomy_or_error
    from mmssr_core.dedup.budget import select_deduplicated
    from mmssr_core.schema import argmax_column
    from mmssr_core.selection import SelectionInputError, parse_budget
    from mmssr_core.store import atomic_write_parquet

    t0 = time.perf_counter()
    try:
        budgets = [parse_budget(b) for b in args.budget]
    except SelectionInputError as exc:
        raise CommandError(str(exc)) from None
    out = Path(args.out)
    _check_out(out)
    taxonomy = taxonomy_or_error(args.taxonomy)
    caps = _capabilities(args.capabilities)
    keys = caps if caps is not None else taxonomy.keys
    wanted = ["id", "source", "styles"] + keys + [argmax_column(k) for k in keys]
    scores = read_parquet_file(args.scores, "scores", wanted)
    groups = read_parquet_file(args.duplicates, "duplicates") if args.duplicates else None
    try:
        results, dedup = select_deduplicated(
            scores,
            budgets,
            groups,
            method=args.method,
            capabilities=caps,
            threshold=args.threshold,
            seed=args.seed,
            taxonomy=taxonomy,
            rank=args.rank,
        )
    except SelectionInputError as exc:
        raise CommandError(str(exc)) from None
    _make_folder(out)
    summary: dict = {
        "method": args.method,
        "rank": args.rank,
        "budgets": {},
        "warnings": [],
        "rows": scores.height,
        "threshold": args.threshold,
        "seed": args.seed,
    }
    warnings: list[str] = []
    for b in budgets:
        sel = results[b.key]
        target = out / f"{args.method}_{b.key}.parquet"
        atomic_write_parquet(sel.frame, target)
        summary["budgets"][b.key] = dict(sel.summary(), path=str(target))
        warnings += [w for w in sel.warnings if w not in warnings]
        status = f"SHORT: {sel.reason}" if sel.short else "ok"
        print(f"{args.method} {b.key}: selected {sel.selected:,} of {sel.requested:,} requested -> {target} ({status})")
        if sel.per_capability:
            print("  per capability: " + ", ".join(f"{k} {v:,}" for k, v in sel.per_capability.items()))
    first = next(iter(results.values()))
    summary["rules"] = first.rules
    if first.rules:
        print(f"rule ({args.rank} rank): " + ", ".join(f"{k}: {v}" for k, v in first.rules.items()))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    summary["warnings"] = warnings
    if dedup is not None:
        summary["dedup"] = {"deduplicated_pool_size": dedup.deduplicated_size, **dedup.summary}
        print(
            f"duplicates: {dedup.summary['removed']:,} samples in {dedup.summary['groups']:,} groups left out; "
            f"{dedup.deduplicated_size:,} of {scores.height:,} candidates"
        )
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    print(f"{len(results)} budget(s) from {scores.height:,} rows in {summary['seconds']:.2f} s")
    if args.json:
        print_json_line(summary)
    return 0


def _capabilities(text: str | None) -> list[str] | None:
    if text is None:
        return None
    caps = [c.strip() for c in text.split(",") if c.strip()]
    if not caps:
        raise CommandError("--capabilities is empty")
    return caps


def _check_out(out: Path) -> None:
    """Fail before any work when --out cannot be a folder (it or a parent is a file)."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out else f"is under {p}, which is a file"
                raise CommandError(f"--out {out} {what}, not a folder")
            return


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
