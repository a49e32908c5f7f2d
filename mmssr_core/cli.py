"""`mmssr` command line: a thin dispatcher.

Each subcommand is a module with `add_arguments(parser)` and `run(args) -> int`. The core's own commands are
listed below; other installed packages add theirs through the `mmssr.commands` entry-point group (the Dagster
layer contributes `materialize` that way), so this package never imports them by name. Modules are imported
only when their subcommand runs, so `mmssr --help` stays fast (no torch, no Dagster).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

ENTRY_POINT_GROUP = "mmssr.commands"
DISTRIBUTION = "mmssr"

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("mmssr_core.commands.ingest", "ingest a pool file into the store (quarantining bad rows)"),
    "score": ("mmssr_core.commands.score", "score ingested samples with a scorer/styler backend"),
    "scores": ("mmssr_core.commands.scores", "write the pool-wide scores table (Parquet)"),
    "dedup": ("mmssr_core.commands.dedup", "find exact and near duplicate groups of the ingested pool"),
    "select": ("mmssr_core.commands.select", "select subsets from a scores table"),
    "export": ("mmssr_core.commands.export", "export a selection as LLaVA / ShareGPT training data"),
    "report": ("mmssr_core.commands.report", "build the eval report of a selection"),
    "downstream": (
        "mmssr_core.commands.downstream",
        "train and evaluate subsets with your command; the paper's benchmark table",
    ),
    "convert-checkpoint": (
        "mmssr_core.commands.convert_checkpoint",
        "convert a released mmSSR (LLaVA-NeXT llava_qwen) checkpoint to HF LLaVA-OneVision",
    ),
    "serve-vllm": (
        "mmssr_core.commands.serve_vllm",
        "start vLLM's OpenAI-compatible server feeding the scorer the reference inputs",
    ),
    "label": ("mmssr_core.commands.label", "label a stratified sample with a teacher model"),
    "agreement": ("mmssr_core.commands.agreement", "agreement of a scorer with teacher labels"),
    "export-scorer-data": (
        "mmssr_core.commands.export_scorer_data",
        "turn teacher labels into scorer/styler training conversations",
    ),
}

# Exit statuses every command shares.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def version() -> str:
    """The installed distribution's version (what `pip` installed), or "unknown" from a bare source tree."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def _core_commands() -> dict[str, tuple[str, str]]:
    import importlib.util

    return {k: v for k, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def _plugin_commands() -> dict[str, str]:
    """name -> module of the commands other installed packages register under `mmssr.commands`."""
    from importlib.metadata import entry_points

    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in COMMANDS:  # the core's own commands cannot be replaced
            found.setdefault(ep.name, ep.module)
    return found


def _plugin_help(module: str) -> str:
    """A plugin command's one-line help: its module's `HELP`, else its docstring's first line."""
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # a broken plugin must not break `mmssr --help`
        return f"(unavailable: {type(exc).__name__}: {exc})"
    doc = getattr(mod, "HELP", None) or (mod.__doc__ or "").strip().splitlines()[0:1]
    return doc if isinstance(doc, str) else (doc[0] if doc else "")


def available_commands(with_help: bool = True) -> dict[str, tuple[str, str]]:
    """Every runnable command: name -> (module, one-line help), the core's first, then the plugins'."""
    commands = dict(_core_commands())
    for name, module in sorted(_plugin_commands().items()):
        commands[name] = (module, _plugin_help(module) if with_help else "")
    return commands


def build_parser(commands: dict[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmssr",
        description="mmSSR multimodal data selection",
        epilog="Store: every command that reads or writes the store takes --store DIR (default: $MMSSR_STORE "
        f"if set, else ./store). Exit status: {EXIT_OK} done, {EXIT_FAILED} ran but some work failed "
        f"(see the output), {EXIT_USAGE} bad arguments or input, {EXIT_INTERRUPTED} interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"mmssr {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in (commands if commands is not None else available_commands()).items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        build_parser().parse_args(argv[:1])  # --version / --help exit here; anything else is a usage error
        build_parser().print_help()
        return EXIT_OK
    name = argv[0]
    commands = available_commands(with_help=False)
    if name not in commands:
        build_parser().print_usage(sys.stderr)
        print(
            f"mmssr: error: unknown command {name!r} (commands of other packages, such as `materialize` "
            f"from mmssr_assets, register through the {ENTRY_POINT_GROUP!r} entry points of an "
            "installed distribution: reinstall with `pip install -e .` if one is missing)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    module = importlib.import_module(commands[name][0])
    help_ = COMMANDS[name][1] if name in COMMANDS else _plugin_help(commands[name][0])
    p = argparse.ArgumentParser(prog=f"mmssr {name}", description=help_)
    module.add_arguments(p)
    args = p.parse_args(argv[1:])
    try:
        return int(module.run(args) or EXIT_OK)
    except CommandError as exc:
        print(f"mmssr {name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"mmssr {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# -- what every command module may use -----------------------------------------------------------------
STORE_HELP = "store root (default: $MMSSR_STORE if set, else ./store)"


def add_store_argument(p: argparse.ArgumentParser, what: str = "") -> None:
    """The one `--store` convention: optional, default $MMSSR_STORE, else ./store."""
    p.add_argument("--store", metavar="DIR", help=STORE_HELP + (f"; {what}" if what else ""))


def store_root(args: argparse.Namespace) -> Path:
    """The store root a command uses: --store, else $MMSSR_STORE, else ./store (absolute)."""
    from mmssr_core.store import default_store_root

    given = getattr(args, "store", None)
    return Path(given).resolve() if given else default_store_root()


def open_store(args: argparse.Namespace):
    """The `Store` at `store_root(args)`."""
    from mmssr_core.store import Store

    return Store(store_root(args))


def print_json_line(obj: dict) -> None:
    """The machine-readable summary: always the last line printed with --json."""
    sys.stdout.flush()
    print(json.dumps(obj, sort_keys=True, default=str), flush=True)


if __name__ == "__main__":  # pragma: no cover
    # Run the imported module's main, not this __main__ copy: commands raise
    # mmssr_core.cli.CommandError, which a __main__.CommandError handler would not catch.
    from mmssr_core.cli import main as _main

    sys.exit(_main())
