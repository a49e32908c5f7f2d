"""Conventions every `mmssr` command shares: --version, one --store option (optional, $MMSSR_STORE, else
./store), --json summaries last on stdout, exit statuses."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json

import pytest

from mmssr_core.cli import EXIT_USAGE, available_commands, main

# commands that never open the store: select reads a scores file, the other two work on model folders
NO_STORE = {"select", "convert-checkpoint", "serve-vllm"}


def _parser(name: str, module: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"mmssr {name}")
    importlib.import_module(module).add_arguments(p)
    return p


def _option(p: argparse.ArgumentParser, flag: str):
    return next((a for a in p._actions if flag in a.option_strings), None)


def test_version_comes_from_the_installed_distribution(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"mmssr {importlib.metadata.version('mmssr')}"


@pytest.mark.parametrize("name", sorted(available_commands(with_help=False)))
def test_one_store_convention(name):
    module = available_commands(with_help=False)[name][0]
    store = _option(_parser(name, module), "--store")
    if name in NO_STORE:
        assert store is None
        return
    assert store is not None, f"mmssr {name} has no --store"
    assert not store.required and store.default is None
    assert "$MMSSR_STORE" in store.help and "./store" in store.help


def test_the_store_defaults_to_the_environment_then_the_working_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMSSR_STORE", str(tmp_path / "from_env"))
    assert main(["score", "--backend", "rules"]) == EXIT_USAGE
    assert f"no ingested sources under {tmp_path / 'from_env'}" in capsys.readouterr().err
    monkeypatch.delenv("MMSSR_STORE")
    assert main(["score", "--backend", "rules"]) == EXIT_USAGE
    assert f"no ingested sources under {tmp_path / 'store'}" in capsys.readouterr().err


def test_unknown_commands_and_bad_flags_are_usage_errors(capsys):
    assert main(["no-such-command"]) == EXIT_USAGE
    assert "unknown command 'no-such-command'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["--no-such-flag"])
    assert stop.value.code == EXIT_USAGE


def test_help_lists_every_command_and_the_conventions(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert main([]) == 0 and capsys.readouterr().out == out  # no arguments: the same help
    for name in available_commands(with_help=False):
        assert name in out
    assert "$MMSSR_STORE" in out and "Exit status" in out


def test_json_summary_is_the_last_stdout_line(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    rows = [
        {
            "id": str(i),
            "conversations": [
                {"from": "human", "value": f"Name {i} colours."},
                {"from": "gpt", "value": "Red and blue."},
            ],
        }
        for i in range(3)
    ]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["ingest", str(pool), "--source", "s", "--store", str(tmp_path / "st"), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["accepted"] == 3


def test_help_imports_nothing_heavy():
    """`mmssr --help` lists every command (plugins included) without importing polars, Dagster or torch."""
    import subprocess
    import sys

    code = (
        "import contextlib, io, sys\nfrom mmssr_core.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main([])\n"
        "print(sorted(m for m in ('polars', 'dagster', 'torch') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
