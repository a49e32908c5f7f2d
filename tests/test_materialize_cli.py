"""`mmssr materialize --json`: the whole graph through Dagster from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
import polars as pl
from dagster_support import REPO_ROOT, link_source

ONE_RECIPE = """
replace_defaults = true
[[recipe]]
name = "mmssr_20pct"
budget = 0.2
"""


def _run(args, env_extra=None, timeout=300):
    env = {**os.environ, **(env_extra or {})}
    env.pop("MMSSR_RECIPES", None)
    return subprocess.run(
        [sys.executable, "-m", "mmssr_core.cli", "materialize", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_materialize_json_then_incremental(tmp_path, shared_data):
    root, store, home = tmp_path / "sources", tmp_path / "store", tmp_path / "dagster_home"
    link_source(root, shared_data, "llava_bench")
    recipes = tmp_path / "recipes.toml"
    recipes.write_text(ONE_RECIPE)
    args = ["--sources", str(root), "--store", str(store), "--recipes", str(recipes), "--json"]
    proc = _run(args, {"DAGSTER_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sources"]["llava_bench"] | {} == {
        **out["sources"]["llava_bench"],
        "accepted": 90,
        "quarantined": 0,
        "scored": 90,
        "failed": 0,
    }
    sub = out["subsets"]["mmssr_20pct"]
    assert sub["requested"] == 18 and sub["selected"] == 18
    assert pl.read_parquet(sub["path"])["id"].n_unique() == 18
    rep = out["reports"]["mmssr_20pct"]
    assert os.path.isfile(rep["html"]) and os.path.isfile(rep["json"])
    assert out["checks"] and all(out["checks"].values()) and len(out["checks"]) == 6
    assert "[1/2] source llava_bench" in proc.stderr  # progress on stderr
    assert "Warning" not in proc.stderr, proc.stderr  # Dagster's known warnings are filtered by name, none else shows
    assert (home / "dagster.yaml").is_file()  # instance config copied into the empty DAGSTER_HOME

    # second run, human output: same instance, nothing new to score, says where things are
    proc = _run(args[:-1], {"DAGSTER_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("llava_bench"))
    assert row[1:] == ["90", "0", "0", "90", "0"]  # accepted, quarantined, scored, cached, failed
    assert f"subsets: {store}/selections/<recipe>.parquet" in proc.stdout
    assert f"report mmssr_20pct: {store}/reports/mmssr_20pct.html" in proc.stdout
    assert f"DAGSTER_HOME={home} " in proc.stdout and "dagster dev -h 127.0.0.1" in proc.stdout
    assert "checks: 6/6 passed" in proc.stdout

    # the runs live in the persistent instance the UI reads
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert inst.get_dynamic_partitions("sources") == ["llava_bench"]
        assert len(inst.get_runs()) == 4
        assert inst.get_latest_materialization_event(dg.AssetKey("eval_report")) is not None


def test_unusable_arguments_are_one_line_errors(tmp_path):
    proc = _run(["--sources", str(tmp_path / "nope"), "--store", str(tmp_path / "s"), "--json"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mmssr materialize: error: sources root {tmp_path / 'nope'} is not a folder"
    ]
    (tmp_path / "empty").mkdir()
    proc = _run(["--sources", str(tmp_path / "empty"), "--store", str(tmp_path / "s")])
    assert proc.returncode == 2 and "no source folder" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[recipe]]\nname = "x"\nbudget = 1.5\n')
    (tmp_path / "empty" / "src").mkdir()
    (tmp_path / "empty" / "src" / "pool.json").write_text("[]")
    proc = _run(["--sources", str(tmp_path / "empty"), "--store", str(tmp_path / "s"), "--recipes", str(bad)])
    assert (
        proc.returncode == 2
        and "recipe 'x': budget '1.5' is neither a fraction (0 < r < 1) nor a whole count" in proc.stderr
    )
