"""`mmssr ingest`: exit codes, the human summary, the --json last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ingest_support import sample, source_dir, write_jsonl

from mmssr_core.cli import main


def test_json_summary_and_exit_zero_with_quarantine(tmp_path, capsys):
    root = source_dir(tmp_path)
    pool = write_jsonl(root / "pool.jsonl", [sample("a"), sample("b", image="img/nope.png"), b"{bad", sample("c")])
    rc = main(["ingest", str(pool), "--source", "demo", "--store", str(tmp_path / "st"), "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    summary = json.loads(out[-1])
    assert summary["source"] == "demo"
    assert (summary["read"], summary["accepted"], summary["quarantined"]) == (4, 2, 2)
    assert summary["reasons"] == {"image_missing": 1, "malformed_record": 1}
    assert any("quarantined 2" in line for line in out[:-1])
    assert (tmp_path / "st" / "raw_pool" / "demo.parquet").exists()
    assert (tmp_path / "st" / "ingest_stats" / "demo.json").exists()


def test_folder_defaults_source_name_and_store_env(tmp_path, capsys, monkeypatch, shared_data):
    monkeypatch.setenv("MMSSR_STORE", str(tmp_path / "envstore"))
    rc = main(["ingest", str(shared_data / "math_vision_testmini"), "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and summary["source"] == "math_vision_testmini" and summary["accepted"] == 304
    assert (tmp_path / "envstore" / "raw_pool" / "math_vision_testmini.parquet").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["{missing}", "--source", "x"], "does not exist"),
        (["{text}", "--source", "x"], "cannot detect the format"),
        (["{pool}", "--source", "../x"], "invalid source name"),
        (["{pool}"], "--source NAME is required"),
        (["{pool}", "--source", "x", "--image-root", "{missing}"], "--image-root"),
        (["{pool}", "--source", "x", "--format", "parquet"], "Parquet"),
    ],
)
def test_unusable_arguments_exit_2(tmp_path, capsys, args, needle):
    root = source_dir(tmp_path)
    paths = {
        "missing": str(tmp_path / "missing.json"),
        "pool": str(write_jsonl(root / "pool.jsonl", [sample("a")])),
        "text": str(tmp_path / "notes.txt"),
    }
    (tmp_path / "notes.txt").write_text("just some notes")
    argv = ["ingest", *[a.format(**paths) for a in args], "--store", str(tmp_path / "st")]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("mmssr ingest: error:") and needle in err[0]


def test_console_script_subprocess(tmp_path, repo_root):
    root = source_dir(tmp_path)
    pool = write_jsonl(root / "pool.jsonl", [sample("a"), sample("b", image="../../etc/passwd")])
    env = {**os.environ, "MMSSR_STORE": str(tmp_path / "st")}
    proc = subprocess.run(
        [sys.executable, "-m", "mmssr_core.cli", "ingest", str(pool), "--source", "s", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo_root,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["reasons"] == {"image_path_escapes_root": 1}
    bad = subprocess.run(
        [sys.executable, "-m", "mmssr_core.cli", "ingest", str(tmp_path / "nope"), "--source", "s"],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo_root,
        timeout=120,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr
