"""`mmssr report`: build the eval report (JSON + self-contained HTML + PNG plots) of one selection.

Inputs come from files (`--scores`, `--selection`, `--pool`) or, when omitted, from the store, gathered
exactly as the Dagster asset gathers them (`mmssr_core.report_inputs`): the recipe's settings recorded
beside its selection give the seed, budget, threshold and rank mode unless an option says otherwise.
Output: `<out or store>/reports/<recipe>.{json,html}` and `reports/<recipe>.<plot>.png`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", help="scores table Parquet (default: the store's scores/pool.parquet)")
    p.add_argument(
        "--selection",
        help="selection Parquet/CSV: id, source (+ rank, picked_by, bin) "
        "(default: the store's selections/<recipe>.parquet)",
    )
    p.add_argument("--recipe", help="recipe name (file names of the report); default: the selection file's stem")
    add_store_argument(p, "inputs not given as files come from it")
    p.add_argument("--out", help="write the report under OUT/reports/ instead of the store")
    p.add_argument(
        "--pool", action="append", help="raw_pool Parquet (repeatable); default: the store's raw_pool when present"
    )
    p.add_argument("--failures", action="append", help="score_failures Parquet (repeatable); default: the store's")
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="another selection at the same budget to compare against (repeatable)",
    )
    p.add_argument(
        "--budget-selection",
        action="append",
        default=[],
        metavar="LABEL=FILE",
        help="this recipe's selection at another budget, for the overlap/nesting check (repeatable)",
    )
    p.add_argument(
        "--budget",
        help="the budget the selection was made with (fraction, N%% or count), for the record "
        "(default: the recipe's, as recorded with its selection)",
    )
    p.add_argument(
        "--threshold", type=float, help="selection threshold t (score > t qualifies); default: the recipe's, else 0"
    )
    p.add_argument(
        "--rank",
        choices=("integer", "expected"),
        help="the selection's rank mode, so 'pool passing' counts with its rule: integer (the integer "
        "score where the table has one) or expected (the opt-in); default: the recipe's, else integer",
    )
    p.add_argument("--capabilities", help="comma-separated capability keys to report (default: all in the scores)")
    p.add_argument("--taxonomy", help="taxonomy config file (JSON/TOML); default $MMSSR_TAXONOMY or the paper's")
    p.add_argument(
        "--seed", type=int, help="seed of the random subset of the same size (default: the recipe's, else 0)"
    )
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


def _files(args) -> dict:
    """The inputs given as files (those the store's must not provide)."""
    import polars as pl

    out = {}
    if args.scores:
        out["scores"] = _read(args.scores, "scores")
    if args.selection:
        out["selection"] = _read(args.selection, "selection")
    if args.pool:
        out["pool"] = pl.concat([_read(p, "pool") for p in args.pool], how="diagonal_relaxed")
    if args.failures:
        out["failures"] = pl.concat([_read(p, "failures") for p in args.failures], how="diagonal_relaxed")
    return out


def run(args: argparse.Namespace) -> int:
    from mmssr_core.report_inputs import ReportInputsError, gather_report_inputs
    from mmssr_core.report_metrics import ReportError
    from mmssr_core.selection import SelectionInputError, parse_budget
    from mmssr_core.store import Store, StoreError
    from mmssr_core.taxonomy import TaxonomyError, load_taxonomy

    store = open_store(args)
    recipe = args.recipe or (Path(args.selection).stem if args.selection else None)
    if not recipe:
        raise CommandError("give --recipe (and/or --selection FILE)")
    try:
        inputs = gather_report_inputs(store, recipe, **_files(args)).with_options(
            seed=args.seed,
            budget=parse_budget(args.budget).value if args.budget else None,
            threshold=args.threshold,
            rank=args.rank,
            capabilities=[c.strip() for c in args.capabilities.split(",") if c.strip()] if args.capabilities else None,
            baselines=_pairs(args.baseline, "baseline") or None,
            budget_selections=_pairs(args.budget_selection, "budget-selection") or None,
        )
        print(
            f"mmssr report: {recipe}: {inputs.selection.height} selected of {inputs.scores.height} scored",
            file=sys.stderr,
        )
        result = inputs.build(
            Store(args.out) if args.out else store,
            taxonomy=load_taxonomy(args.taxonomy),
            examples_per_style=args.examples,
            make_plots=not args.no_plots,
        )
    except (StoreError, TaxonomyError, ReportError, SelectionInputError, ReportInputsError) as exc:
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
