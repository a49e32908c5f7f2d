"""`mmssr downstream`: the paper's loop, subset -> training data -> your train-and-evaluate command -> table.

mmssr downstream run --recipe mmssr_5pct --command 'bash train_eval.sh {dataset_dir} {dataset_name} {results}'
mmssr downstream run --recipe full --full --command ...      # the full-data run (every pool sample)
mmssr downstream import --recipe full --results full.json    # results produced elsewhere
mmssr downstream table [--json]
"""

from __future__ import annotations

import argparse
import sys

from mmssr_core.cli import CommandError, add_store_argument, open_store, print_json_line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action", choices=["run", "import", "table"], help="run a recipe, import a results file, or print the table"
    )
    add_store_argument(p)
    p.add_argument("--recipe", help="recipe name (run, import)")
    p.add_argument("--selection", help="selection file (default: the store's selections/<recipe>.parquet)")
    p.add_argument(
        "--full", action="store_true", help="run: train on every sample of the pool (the full-data reference)"
    )
    p.add_argument(
        "--command",
        help="command template (default $MMSSR_TRAIN_EVAL_CMD); placeholders: "
        "{dataset} {dataset_dir} {dataset_name} {dataset_info} {image_root} {recipe} {out} {results}",
    )
    p.add_argument("--timeout", type=float, help="seconds before the command is killed")
    p.add_argument("--format", default="llava", help="training data format passed to mmssr_core.export (default llava)")
    p.add_argument("--results", help="import: the results JSON file")
    p.add_argument("--lmms-eval", action="store_true", help="import: the file is an lmms-eval *_results.json")
    p.add_argument("--method", help="method of the recipe (mmssr, random, full...); default from the recipe config")
    p.add_argument("--budget", help="budget label of the recipe; default from the recipe config")
    p.add_argument("--full-recipe", default="full", help="table: the recipe holding the full-data run (default full)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def _recipe_info(store, name: str, method, budget):
    from mmssr_core.recipes import RecipeError, get_recipe

    if method is not None and budget is not None:
        return method, budget
    try:
        r = get_recipe(name, store_root=store.root)
        return method or r.method, budget if budget is not None else r.budget_label
    except RecipeError:
        return method, budget


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from mmssr_core import downstream as D
    from mmssr_core.schema import RAW_POOL_TABLE, SELECTIONS_TABLE
    from mmssr_core.store import StoreError

    store = open_store(args)
    try:
        if args.action == "table":
            df = D.paper_table(D.load_results(store), full=args.full_recipe)
            print(D.table_markdown(df))
            if args.json:
                print_json_line({"rows": df.to_dicts()})
            return 0
        if not args.recipe:
            raise CommandError(f"downstream {args.action} needs --recipe")
        if args.action == "import":
            if not args.results:
                raise CommandError("downstream import needs --results FILE")
            method, budget = _recipe_info(
                store, args.recipe, args.method or ("full" if args.recipe == args.full_recipe else None), args.budget
            )
            if args.lmms_eval:
                import json

                try:
                    obj = json.loads(open(args.results, encoding="utf-8").read())
                except (OSError, ValueError) as exc:
                    raise CommandError(f"cannot read lmms-eval results {args.results}: {exc}") from None
                rec = D.store_results(
                    store, args.recipe, D.from_lmms_eval(obj), method=method, budget=budget, results_file=args.results
                )
            else:
                rec = D.import_results(store, args.recipe, args.results, method=method, budget=budget)
        else:
            command = (
                D.TrainEvalCommand(args.command, timeout_s=args.timeout)
                if args.command
                else D.TrainEvalCommand.from_env(timeout_s=args.timeout)
            )
            command.words()  # fail on a bad template before exporting anything
            if not store.partitions(RAW_POOL_TABLE):
                raise CommandError(f"no raw_pool under {store.root}: ingest first")
            if args.full:
                selection = store.scan(RAW_POOL_TABLE).select("id", "source").collect()
                method, budget = args.method or "full", args.budget
            else:
                selection = (
                    pl.read_parquet(args.selection) if args.selection else store.read(SELECTIONS_TABLE, args.recipe)
                )
                method, budget = _recipe_info(store, args.recipe, args.method, args.budget)
            values = D.export_for_training(
                store, args.recipe, selection, store.table_dir(D.RESULTS_TABLE) / "data" / args.recipe, fmt=args.format
            )
            rec = D.run_train_eval(
                store,
                args.recipe,
                command,
                values,
                method=method,
                budget=budget,
                log=lambda m: print(m, file=sys.stderr),
            )
    except (D.DownstreamError, StoreError) as exc:
        raise CommandError(str(exc)) from None
    print(f"{args.recipe}: " + ", ".join(f"{k} {v:g}" for k, v in rec["benchmarks"].items()))
    if args.json:
        print_json_line(rec)
    return 0
