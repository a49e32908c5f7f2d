"""`mmssr materialize`: every asset for every source under the sources root, through Dagster.

Registered as the `materialize` entry point of the `mmssr.commands` group (pyproject.toml), so the core's
command line runs it without importing this package by name. The work happens in
`mmssr_assets.materialize` (imported in `run`, so `mmssr --help` stays light); this module only parses
arguments and prints.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mmssr_core.cli import CommandError, add_store_argument, print_json_line
from mmssr_core.cli import store_root as cli_store_root
from mmssr_core.progress import Progress

HELP = "materialize the whole Dagster graph headlessly"


def add_arguments(p) -> None:
    p.add_argument(
        "--sources", help="sources root: one sub-folder per source (default: $MMSSR_SOURCES_ROOT or examples/sources)"
    )
    add_store_argument(p)
    p.add_argument(
        "--backend",
        help="scoring backend: rules | transformers | vllm | openai "
        "(default: $MMSSR_BACKEND or rules); model via $MMSSR_MODEL, server via $MMSSR_BASE_URL",
    )
    p.add_argument("--model", help="model path or name for the backend (default: $MMSSR_MODEL)")
    p.add_argument(
        "--recipes",
        help="recipe file (TOML/JSON) added to the defaults (default: $MMSSR_RECIPES or <store>/recipes.toml)",
    )
    p.add_argument("--only", nargs="+", metavar="SOURCE", help="materialize only these sources")
    p.add_argument("--batch-size", type=int, default=8, help="samples per scoring call (default 8)")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no step lines or bar on stderr (default: a bar of the steps on a terminal, and a line per step)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run(args) -> int:
    from mmssr_core.recipes import RecipeError, load_recipes

    sources_root = Path(args.sources) if args.sources else None
    if sources_root is None:
        from mmssr_assets.resources import default_sources_root

        sources_root = default_sources_root()
    if not sources_root.is_dir():
        raise CommandError(f"sources root {sources_root} is not a folder")
    store_root = cli_store_root(args)
    if args.batch_size < 1:
        raise CommandError("--batch-size must be >= 1")
    try:
        recipes = (
            load_recipes(args.recipes, store_root=store_root) if args.recipes else load_recipes(store_root=store_root)
        )
    except RecipeError as exc:
        raise CommandError(str(exc)) from None

    from mmssr_core.ingest import IngestError, discover_sources

    try:
        found = discover_sources(sources_root)
    except IngestError as exc:
        raise CommandError(str(exc)) from None
    if not found:
        raise CommandError(f"no source folder (a sub-folder holding a pool file) under {sources_root}")
    if args.only:
        unknown = sorted(set(args.only) - set(found))
        if unknown:
            raise CommandError(f"unknown sources {unknown}; found: {', '.join(found)}")

    print(
        f"materializing {len(args.only or found)} source(s) from {sources_root} into {store_root} "
        f"through Dagster ({'DAGSTER_HOME=' + os.environ['DAGSTER_HOME'] if os.environ.get('DAGSTER_HOME') else 'ephemeral instance'})",
        file=sys.stderr,
        flush=True,
    )
    # Dagster's own warnings: mmssr_assets filters the ones it triggers on purpose, by class and message
    from mmssr_assets.materialize import materialize_all
    from mmssr_assets.resources import default_scorer

    scorer = default_scorer()
    if args.backend or args.model:
        scorer = scorer.model_copy(update={k: v for k, v in (("backend", args.backend), ("model", args.model)) if v})
    # the step lines say the same as plain progress lines would: off a terminal only they are written
    bar = Progress("materialize", unit="steps", enabled=not args.no_progress, plain_updates=False)
    try:
        summary = materialize_all(
            sources_root=sources_root,
            store_root=store_root,
            scorer=scorer,
            recipes=recipes,
            batch_size=args.batch_size,
            only=args.only,
            progress=bar.message,
            on_step=lambda done, total: bar.update(done, total),
        )
    finally:
        bar.close()
    if args.json:
        print_json_line(summary.to_dict())
    else:
        _print_human(summary)
    return 0 if summary.ok else 1


def _print_human(s) -> None:
    from mmssr_core.schema import SELECTIONS_TABLE

    print(f"\n{'source':<28} {'accepted':>9} {'quarant.':>9} {'scored':>7} {'cached':>7} {'failed':>7}")
    for name, r in s.sources.items():
        print(
            f"{name:<28} {r['accepted'] or 0:>9} {r['quarantined'] or 0:>9} {r['scored'] or 0:>7} "
            f"{r['cached'] or 0:>7} {r['failed'] or 0:>7}"
        )
    print(f"\n{'recipe':<28} {'selected':>9} {'budget':>9}")
    for name, r in s.subsets.items():
        note = f"  short: {r['reason']}" if r.get("reason") else ""
        print(f"{name:<28} {r['selected']:>9} {r['requested']:>9}{note}")
    failed = [k for k, v in s.checks.items() if not v]
    print(
        f"\nchecks: {len(s.checks) - len(failed)}/{len(s.checks)} passed"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    for f in s.failures:
        print(f"error: {f}")
    print(f"\nsubsets: {Path(s.store) / SELECTIONS_TABLE}/<recipe>.parquet")
    for name, r in s.reports.items():
        print(f"report {name}: {r.get('html')}")
    home = s.dagster_home or str(Path.cwd() / ".dagster_home")
    exe = Path(sys.executable).parent / "dagster"
    dagster = str(exe) if exe.exists() else "dagster"
    print(
        "\nopen the UI (http://127.0.0.1:3000):\n"
        f"  DAGSTER_HOME={home} MMSSR_STORE={s.store} MMSSR_SOURCES_ROOT={s.sources_root} "
        f"{dagster} dev -h 127.0.0.1 -p 3000"
    )
    if not s.dagster_home:
        print(
            "  (this run used an ephemeral Dagster instance: set DAGSTER_HOME before `mmssr materialize` "
            "to see its runs and metadata in the UI)"
        )
