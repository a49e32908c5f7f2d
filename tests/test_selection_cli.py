"""`mmssr select`: files named by the budget as typed, the --json summary as the last line, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest

from mmssr_core.cli import main
from mmssr_core.taxonomy import Taxonomy

KEYS = Taxonomy().keys


@pytest.fixture
def scores(tmp_path):
    import random

    rng = random.Random(0)
    n = 400
    df = pl.DataFrame(
        {
            "id": [f"s{i}" for i in range(n)],
            "source": [rng.choice(["coco", "ocrvqa"]) for _ in range(n)],
            "styles": [
                rng.sample(["yes/no", "multi-choice", "detailed description"], rng.randint(1, 2)) for _ in range(n)
            ],
            **{k: [rng.random() * 5 for _ in range(n)] for k in KEYS},
            "scorer": ["test"] * n,
        }
    )
    path = tmp_path / "scores.parquet"
    df.write_parquet(path)
    return path


def run_cli(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_select_writes_one_file_per_budget_named_as_typed(scores, tmp_path, capsys):
    out = tmp_path / "sel"
    rc, stdout, _ = run_cli(
        [
            "select",
            "--scores",
            str(scores),
            "--budget",
            "0.05",
            "--budget",
            "10%",
            "--budget",
            "30",
            "--out",
            str(out),
            "--json",
        ],
        capsys,
    )
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["mmssr_0.05.parquet", "mmssr_10%.parquet", "mmssr_30.parquet"]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["method"] == "mmssr" and set(summary["budgets"]) == {"0.05", "10%", "30"}
    b = summary["budgets"]["10%"]
    assert b["requested"] == 40 and b["selected"] == 40 and b["short"] is False and b["reason"] is None
    assert set(b["per_capability"]) == set(KEYS) and sum(b["per_capability"].values()) == 40
    assert b["path"] == str(out / "mmssr_10%.parquet")
    assert summary["budgets"]["0.05"]["requested"] == 20 and summary["budgets"]["30"]["requested"] == 30
    assert isinstance(summary["seconds"], float) and summary["warnings"] == []
    assert summary["rank"] == "integer" and summary["rules"] == {k: "float > 0" for k in KEYS}  # no integer columns
    assert b["table_rows"] == b["pool_size"] == 400 and b["rules"] == summary["rules"]
    f = pl.read_parquet(out / "mmssr_10%.parquet")
    assert f.columns == ["id", "source", "rank", "picked_by", "bin"]
    assert f.schema["rank"] == pl.Int64 and f["rank"].to_list() == list(range(1, 41))
    assert f["picked_by"].null_count() == 0 and f["bin"].str.contains(r"\+").all()
    assert "selected 40 of 40" in stdout


def test_select_baseline_capabilities_and_threshold(scores, tmp_path, capsys):
    out = tmp_path / "sel"
    rc, stdout, _ = run_cli(
        [
            "select",
            "--scores",
            str(scores),
            "--budget",
            "300",
            "--method",
            "capability-only",
            "--capabilities",
            "humanities,optical_character_recognition",
            "--threshold",
            "4.5",
            "--seed",
            "3",
            "--out",
            str(out),
            "--json",
        ],
        capsys,
    )
    assert rc == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    b = summary["budgets"]["300"]
    src = pl.read_parquet(scores)
    eligible = src.filter((pl.col("humanities") > 4.5) | (pl.col("optical_character_recognition") > 4.5)).height
    assert b["short"] is True and b["selected"] == eligible and b["requested"] == 300
    assert set(b["per_capability"]) == {"humanities", "optical_character_recognition"}
    assert "exhausted" in b["reason"] and any("300" in w for w in summary["warnings"])
    f = pl.read_parquet(out / "capability-only_300.parquet")
    assert f["bin"].null_count() == f.height and f.height == eligible

    rc, stdout, _ = run_cli(
        ["select", "--scores", str(scores), "--budget", "5", "--method", "random", "--out", str(out)], capsys
    )
    assert rc == 0 and (out / "random_5.parquet").exists()
    assert pl.read_parquet(out / "random_5.parquet")["picked_by"].null_count() == 5


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--budget", "0"], "positive"),
        (["--budget", "401"], "only 400"),
        (["--budget", "abc"], "not a budget"),
        (["--budget", "5", "--capabilities", "nope"], "unknown capabilities"),
        (["--budget", "5", "--taxonomy", "/nonexistent/tax.json"], "cannot read taxonomy"),
    ],
)
def test_select_errors_are_one_line_exit_2(scores, tmp_path, capsys, extra, message):
    rc, stdout, err = run_cli(["select", "--scores", str(scores), "--out", str(tmp_path / "o"), *extra], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmssr select: error:") and message in lines[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_select_missing_file_and_bad_table(tmp_path, capsys):
    rc, _, err = run_cli(
        ["select", "--scores", str(tmp_path / "none.parquet"), "--budget", "1", "--out", str(tmp_path)], capsys
    )
    assert rc == 2 and "does not exist" in err
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"id": ["a"], "source": ["x"], "humanities": [1.0]}).write_parquet(bad)
    rc, _, err = run_cli(["select", "--scores", str(bad), "--budget", "1", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "styles" in err and len(err.strip().splitlines()) == 1
    notpq = tmp_path / "x.parquet"
    notpq.write_text("not parquet")
    rc, _, err = run_cli(["select", "--scores", str(notpq), "--budget", "1", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "cannot read" in err


def test_select_custom_taxonomy_file_and_env(tmp_path, capsys, monkeypatch):
    tax = tmp_path / "tax.json"
    tax.write_text(json.dumps({"capabilities": [{"key": "chart_reading", "phrase": "chart reading"}]}))
    df = pl.DataFrame(
        {"id": ["a", "b", "c"], "source": ["x"] * 3, "styles": [["yes/no"]] * 3, "chart_reading": [1.0, 3.0, 2.0]}
    )
    path = tmp_path / "s.parquet"
    df.write_parquet(path)
    out = tmp_path / "o"
    args = [
        "select",
        "--scores",
        str(path),
        "--budget",
        "2",
        "--capabilities",
        "chart_reading",
        "--out",
        str(out),
        "--json",
    ]
    rc, _, err = run_cli(args, capsys)
    assert rc == 2 and "unknown capabilities" in err
    rc, stdout, _ = run_cli(args + ["--taxonomy", str(tax)], capsys)
    assert rc == 0 and pl.read_parquet(out / "mmssr_2.parquet")["id"].to_list() == ["b", "c"]
    monkeypatch.setenv("MMSSR_TAXONOMY", str(tax))
    rc, stdout, _ = run_cli(args, capsys)
    assert rc == 0 and json.loads(stdout.strip().splitlines()[-1])["budgets"]["2"]["per_capability"] == {
        "chart_reading": 2
    }


def test_select_entry_point_subprocess(scores, tmp_path):
    """Through the installed console script: the JSON line is the last line of stdout."""
    exe = os.path.join(os.path.dirname(sys.executable), "mmssr")
    proc = subprocess.run(
        [exe, "select", "--scores", str(scores), "--budget", "5%", "--out", str(tmp_path / "o"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["budgets"]["5%"]["selected"] == 20


@pytest.mark.parametrize("budget", ["1e1", "1_0", "+5", "0", "-1", "nan", "1e-1", " 5", "5/2", "0x10", "100%"])
def test_select_budget_syntax_is_strict(scores, tmp_path, capsys, budget):
    """Only digits, one decimal point and a trailing %: what would be an odd file name never gets that far."""
    out = tmp_path / "o"
    rc, _, err = run_cli(["select", "--scores", str(scores), "--budget", budget, "--out", str(out)], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and repr(budget) in err
    assert not out.exists()


def test_select_budget_forms_accepted(scores, tmp_path, capsys):
    out = tmp_path / "o"
    rc, stdout, _ = run_cli(
        [
            "select",
            "--scores",
            str(scores),
            "--budget",
            "0.1",
            "--budget",
            "10%",
            "--budget",
            "300",
            "--budget",
            "12.5%",
            "--out",
            str(out),
            "--json",
        ],
        capsys,
    )
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "mmssr_0.1.parquet",
        "mmssr_10%.parquet",
        "mmssr_12.5%.parquet",
        "mmssr_300.parquet",
    ]
    b = json.loads(stdout.strip().splitlines()[-1])["budgets"]
    assert [b[k]["requested"] for k in ("0.1", "10%", "300", "12.5%")] == [40, 40, 300, 50]


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_select_out_that_cannot_be_a_folder_is_a_one_line_error(scores, tmp_path, capsys, where):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    out = blocker if where == "file" else blocker / "sub" / "dir"
    rc, _, err = run_cli(["select", "--scores", str(scores), "--budget", "5", "--out", str(out)], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "not a folder" in lines[0] and str(blocker) in lines[0]
    assert blocker.read_text() == "a file"


def _table(tmp_path, **columns):
    n = len(next(iter(columns.values())))
    df = pl.DataFrame({"id": [f"s{i}" for i in range(n)], "source": ["x"] * n, "styles": [["yes/no"]] * n, **columns})
    path = tmp_path / "t.parquet"
    df.write_parquet(path)
    return path


@pytest.mark.parametrize("case", ["all_nan", "threshold", "integers_zero"])
def test_select_with_nothing_selectable_fails_with_the_reason_and_writes_nothing(tmp_path, capsys, case):
    nan = float("nan")
    if case == "all_nan":
        path, extra, rule = (
            _table(tmp_path, humanities=[nan] * 4, stem_knowledge=[nan, None, nan, nan]),
            [],
            "float > 0",
        )
    elif case == "threshold":
        path, extra, rule = _table(tmp_path, humanities=[1.0, 2.0, 3.0, 2.5]), ["--threshold", "3"], "float > 3"
    else:
        path = _table(
            tmp_path, humanities=[1.5, 2.0, 0.5, 0.7], humanities__argmax=pl.Series([0, 0, 0, 0], dtype=pl.Int8)
        )
        extra, rule = [], "integer > 0"
    out = tmp_path / "o"
    rc, stdout, err = run_cli(["select", "--scores", str(path), "--budget", "2", "--out", str(out), *extra], capsys)
    assert rc == 2 and "nothing to select" in err and f"humanities: {rule} holds for none" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_select_rejects_scores_outside_the_scale_naming_them(tmp_path, capsys):
    path = _table(tmp_path, humanities=[1.0, -2.0, 3.0], stem_knowledge=[7.5, 1.0, 1.0])
    rc, _, err = run_cli(["select", "--scores", str(path), "--budget", "1", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "0..5" in err and "humanities (1 row)" in err and "stem_knowledge (1 row)" in err
    assert "'s0' (source 'x'): stem_knowledge = 7.5" in err and "'s1' (source 'x'): humanities = -2.0" in err


def test_select_applies_the_integer_rule_and_the_expected_opt_in(tmp_path, capsys):
    """The table the scorer writes (expected + integer): integers decide unless --rank expected."""
    path = _table(tmp_path, humanities=[4.4, 2.6, 3.1, 0.9], humanities__argmax=pl.Series([0, 3, 3, 1], dtype=pl.Int8))
    out = tmp_path / "o"
    rc, stdout, _ = run_cli(
        ["select", "--scores", str(path), "--budget", "3", "--capabilities", "humanities", "--out", str(out), "--json"],
        capsys,
    )
    assert rc == 0 and pl.read_parquet(out / "mmssr_3.parquet")["id"].to_list() == ["s2", "s1", "s3"]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["rank"] == "integer" and summary["rules"] == {"humanities": "integer > 0"}
    assert "rule (integer rank): humanities: integer > 0" in stdout
    rc, stdout, _ = run_cli(
        [
            "select",
            "--scores",
            str(path),
            "--budget",
            "3",
            "--capabilities",
            "humanities",
            "--rank",
            "expected",
            "--out",
            str(out),
            "--json",
        ],
        capsys,
    )
    assert rc == 0 and pl.read_parquet(out / "mmssr_3.parquet")["id"].to_list() == ["s0", "s2", "s1"]
    assert json.loads(stdout.strip().splitlines()[-1])["rules"] == {"humanities": "expected > 0"}
