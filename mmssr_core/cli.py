"""`mmssr` command line: a thin dispatcher.

Each subcommand lives in `mmssr_core.commands.<name>` with `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only when their subcommand runs, so `mmssr --help` stays fast (no torch, no Dagster).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

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
    "materialize": ("mmssr_core.commands.materialize", "materialize the whole Dagster graph headlessly"),
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


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def _available() -> dict[str, tuple[str, str]]:
    import importlib.util

    return {k: v for k, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmssr", description="mmSSR multimodal data selection")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in _available():
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"mmssr: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    p = argparse.ArgumentParser(prog=f"mmssr {name}", description=COMMANDS[name][1])
    module.add_arguments(p)
    args = p.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except CommandError as exc:
        print(f"mmssr {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmssr {name}: interrupted", file=sys.stderr)
        return 130


def print_json_line(obj: dict) -> None:
    """The machine-readable summary: always the last line printed with --json."""
    sys.stdout.flush()
    print(json.dumps(obj, sort_keys=True, default=str), flush=True)


if __name__ == "__main__":  # pragma: no cover
    # Run the imported module's main, not this __main__ copy: commands raise
    # mmssr_core.cli.CommandError, which a __main__.CommandError handler would not catch.
    from mmssr_core.cli import main as _main

    sys.exit(_main())
