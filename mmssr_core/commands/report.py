"""`mmssr report`: build the eval report (JSON + self-contained HTML + PNG plots) of one selection.

Inputs come from files (`--scores`, `--selection`, `--pool`) or, when omitted, from the store
(`scores/pool.parquet`, `selections/<recipe>.parquet`, the `raw_pool` and `score_failures` tables).
Output: `<out or store>/reports/<recipe>.{json,html}` and `reports/<recipe>.<plot>.png`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line
from mmssr_core.schema import FAILURE_TABLE, RAW_POOL_TABLE, SCORES_PARTITION, SCORES_TABLE, SELECTIONS_TABLE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", help="scores table Parquet (default: the store's scores/pool.parquet)")
    p.add_argument("--selection", help="selection Parquet/CSV: id, source (+ rank, picked_by, bin) "
                   "(default: the store's selections/<recipe>.parquet)")
    p.add_argument("--recipe", help="recipe name (file names of the report); default: the selection file's stem")
    add_store_argument(p, "inputs not given as files come from it")
    p.add_argument("--out", help="write the report under OUT/reports/ instead of the store")
    p.add_argument("--pool", action="append", help="raw_pool Parquet (repeatable); default: the store's raw_pool when present")
    p.add_argument("--failures", action="append", help="score_failures Parquet (repeatable); default: the store's")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=FILE",
                   help="another selection at the same budget to compare against (repeatable)")
    p.add_argument("--budget-selection", action="append", default=[], metavar="LABEL=FILE",
                   help="this recipe's selection at another budget, for the overlap/nesting check (repeatable)")
    p.add_argument("--budget", help="the budget the selection was made with (fraction, N%% or count), for the record")
    p.add_argument("--threshold", type=float, default=0.0, help="selection threshold t (score > t qualifies); default 0")
    p.add_argument("--rank", default="integer", choices=("integer", "expected"),
                   help="the selection's rank mode, so 'pool passing' counts with its rule: integer (default: the "
                        "integer score where the table has one) or expected (the opt-in)")
    p.add_argument("--capabilities", help="comma-separated capability keys to report (default: all in the scores)")
    p.add_argument("--taxonomy", help="taxonomy config file (JSON/TOML); default $MMSSR_TAXONOMY or the paper's")
    p.add_argument("--seed", type=int, default=0, help="seed of the random subset of the same size (default 0)")
    p.add_argument("--examples", type=int, default=3, help="example samples per style in the HTML (default 3)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def _read(path: str, what: str):
    import polars as pl

    p = Path(path)
    if not p.is_file():
        raise CommandError(f"{what} file {p} does not exist")
    try:
        if p.suffix == ".csv":
            return pl.read_csv(p)
        if p.suffix in (".json", ".jsonl", ".ndjson"):
            return pl.read_ndjson(p) if p.suffix != ".json" else pl.read_json(p)
        return pl.read_parquet(p)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise CommandError(f"cannot read {what} file {p}: {exc}") from None


def _pairs(items: list[str], what: str) -> dict:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CommandError(f"--{what} expects NAME=FILE, got {item!r}")
        out[name] = _read(path, f"{what} {name!r}")
    return out


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from mmssr_core.report import build_report
    from mmssr_core.selection import SelectionInputError, parse_budget
    from mmssr_core.report_metrics import ReportError
    from mmssr_core.store import Store, StoreError
    from mmssr_core.taxonomy import TaxonomyError, load_taxonomy

    store = open_store(args)
    recipe = args.recipe or (Path(args.selection).stem if args.selection else None)
    if not recipe:
        raise CommandError("give --recipe (and/or --selection FILE)")
    try:
        scores = _read(args.scores, "scores") if args.scores else store.read(SCORES_TABLE, SCORES_PARTITION)
        selection = _read(args.selection, "selection") if args.selection else store.read(SELECTIONS_TABLE, recipe)
        if args.pool:
            pool = pl.concat([_read(p, "pool") for p in args.pool], how="diagonal_relaxed")
        else:
            sources = sorted(scores["source"].unique().to_list()) if "source" in scores.columns else []
            have = [s for s in sources if store.exists(RAW_POOL_TABLE, s)]
            pool = store.scan(RAW_POOL_TABLE, have).collect() if have and len(have) == len(sources) else None
        if args.failures:
            failures = pl.concat([_read(p, "failures") for p in args.failures], how="diagonal_relaxed")
        else:
            parts = store.partitions(FAILURE_TABLE)
            failures = store.scan(FAILURE_TABLE, parts).collect() if parts else None
        taxonomy = load_taxonomy(args.taxonomy)
        budget = parse_budget(args.budget).value if args.budget else None
        caps = [c.strip() for c in args.capabilities.split(",") if c.strip()] if args.capabilities else None
        print(f"mmssr report: {recipe}: {selection.height} selected of {scores.height} scored", file=sys.stderr)
        sidecar = store.path(SELECTIONS_TABLE, recipe, ".json")  # the store's selection summary, if any
        dedup = store.read_json(SELECTIONS_TABLE, recipe).get("dedup") if sidecar.exists() else None
        result = build_report(
            Store(args.out) if args.out else store,
            recipe,
            selection,
            scores,
            pool=pool,
            seed=args.seed,
            budget=budget,
            threshold=args.threshold,
            rank=args.rank,
            capabilities=caps,
            taxonomy=taxonomy,
            failures=failures,
            dedup=dedup,
            baselines=_pairs(args.baseline, "baseline") or None,
            budget_selections=_pairs(args.budget_selection, "budget-selection") or None,
            examples_per_style=args.examples,
            make_plots=not args.no_plots,
        )
    except (StoreError, TaxonomyError, ReportError, SelectionInputError) as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(f"report: {result.html_path}")
        print_json_line(
            {
                "recipe": recipe,
                "json": str(result.json_path),
                "html": str(result.html_path) if result.html_path else None,
                "plots": {k: str(v) for k, v in result.plots.items()},
                "metrics": result.metrics,
            }
        )
    else:
        print(result.markdown)
        print(f"\nreport: {result.html_path}\nsummary: {result.json_path}")
    return 0
