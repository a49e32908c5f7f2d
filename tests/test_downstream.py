"""Downstream loop: a fake train-and-evaluate command (success, failure), results kept, the paper's table."""

from __future__ import annotations

import json
import sys

import polars as pl
import pytest

from mmssr_core.downstream import (
    DownstreamError,
    TrainEvalCommand,
    import_results,
    load_results,
    paper_table,
    run_train_eval,
    table_markdown,
)

FAKE = r"""
import json, os, sys
dataset, recipe, results = sys.argv[1], sys.argv[2], sys.argv[3]
scores = json.loads(os.environ["FAKE_SCORES"])
if os.environ.get("FAKE_FAIL"):
    print("loading dataset " + dataset)
    print("CUDA out of memory while training " + recipe, file=sys.stderr)
    sys.exit(3)
if not os.environ.get("FAKE_NO_RESULTS"):
    n = len(json.load(open(dataset)))
    with open(results, "w") as fh:
        json.dump({"benchmarks": scores, "model": "fake-" + recipe, "meta": {"train_samples": n}}, fh)
"""


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake train eval.py"  # a space in the path: must stay one argument
    script.write_text(FAKE)
    dataset = tmp_path / "data.json"
    dataset.write_text(json.dumps([{"id": "a"}, {"id": "b"}]))
    cmd = TrainEvalCommand(f'{sys.executable} "{script}" {{dataset}} {{recipe}} {{results}}', timeout_s=60)
    return cmd, {"dataset": str(dataset)}


def with_env(cmd, **env):
    return TrainEvalCommand(cmd.template, timeout_s=cmd.timeout_s, env=env)


def test_success_stores_results(store, fake):
    cmd, values = fake
    rec = run_train_eval(
        store,
        "mmssr_5pct",
        with_env(cmd, FAKE_SCORES='{"MMBench": 80.5, "MMStar": 60}'),
        values,
        method="mmssr",
        budget=0.05,
    )
    assert rec["benchmarks"] == {"MMBench": 80.5, "MMStar": 60.0}
    assert rec["model"] == "fake-mmssr_5pct" and rec["meta"] == {"train_samples": 2}
    assert rec["budget"] == "0.05" and rec["method"] == "mmssr"
    on_disk = json.loads((store.root / "downstream" / "mmssr_5pct.json").read_text())
    assert on_disk["benchmarks"] == rec["benchmarks"]
    assert load_results(store) == {"mmssr_5pct": on_disk}


def test_failure_is_clear_and_keeps_earlier_results(store, fake):
    cmd, values = fake
    run_train_eval(store, "r", with_env(cmd, FAKE_SCORES='{"MMBench": 70}'), values)
    before = (store.root / "downstream" / "r.json").read_bytes()
    with pytest.raises(DownstreamError) as ei:
        run_train_eval(store, "r", with_env(cmd, FAKE_SCORES='{"MMBench": 1}', FAKE_FAIL="1"), values)
    msg = str(ei.value)
    assert "exit code 3" in msg and "CUDA out of memory while training r" in msg and "'r'" in msg
    assert "earlier results kept" in msg
    assert (store.root / "downstream" / "r.json").read_bytes() == before
    assert load_results(store)["r"]["benchmarks"] == {"MMBench": 70.0}


def test_missing_or_bad_results(store, fake, tmp_path):
    cmd, values = fake
    with pytest.raises(DownstreamError, match="exited 0 but results file .* does not exist"):
        run_train_eval(store, "r", with_env(cmd, FAKE_SCORES="{}", FAKE_NO_RESULTS="1"), values)
    with pytest.raises(DownstreamError, match="'benchmarks' is empty"):
        run_train_eval(store, "r", with_env(cmd, FAKE_SCORES="{}"), values)
    with pytest.raises(DownstreamError, match="expected a finite number"):
        run_train_eval(store, "r", with_env(cmd, FAKE_SCORES='{"x": "high"}'), values)
    assert load_results(store) == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DownstreamError, match="not valid JSON"):
        import_results(store, "full", bad)


def test_command_errors(store, fake):
    _, values = fake
    with pytest.raises(DownstreamError, match="unknown placeholder {datset}"):
        run_train_eval(store, "r", TrainEvalCommand("echo {datset}"), values)
    with pytest.raises(DownstreamError, match="not found"):
        run_train_eval(store, "r", TrainEvalCommand("/nonexistent/train-eval {dataset}"), values)
    with pytest.raises(DownstreamError, match="timed out"):
        run_train_eval(
            store, "r", TrainEvalCommand([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5), values
        )
    with pytest.raises(DownstreamError, match="no train-and-evaluate command"):
        import os

        os.environ.pop("MMSSR_TRAIN_EVAL_CMD", None)
        TrainEvalCommand.from_env()


def test_paper_table(store, tmp_path):
    def put(recipe, method, budget, scores):
        p = tmp_path / f"{recipe}.json"
        p.write_text(json.dumps({"benchmarks": scores}))
        import_results(store, recipe, p, method=method, budget=budget)

    put("full", "full", None, {"A": 80.0, "B": 50.0, "C": 1000.0})
    put("mmssr_5pct", "mmssr", 0.05, {"A": 76.0, "B": 47.5, "C": 900.0})
    put("random_5pct", "random", 0.05, {"A": 72.0, "B": 48.0, "C": 850.0})
    put("mmssr_10pct", "mmssr", 0.10, {"A": 78.0, "B": 49.0})  # C missing; no random at 10%
    df = paper_table(load_results(store))
    rows = {r["recipe"]: r for r in df.iter_rows(named=True)}
    m5 = rows["mmssr_5pct"]
    assert (
        m5["A %full"] == pytest.approx(95.0)
        and m5["B %full"] == pytest.approx(95.0)
        and m5["C %full"] == pytest.approx(90.0)
    )
    assert m5["share_of_full"] == pytest.approx((95 + 95 + 90) / 3)
    assert m5["random_recipe"] == "random_5pct" and m5["beaten_random"] == 2 and m5["compared"] == 3
    assert rows["random_5pct"]["beaten_random"] is None  # random is not compared with itself
    m10 = rows["mmssr_10pct"]
    assert (
        m10["C"] is None and m10["share_of_full"] == pytest.approx((97.5 + 98.0) / 2) and m10["beaten_random"] is None
    )
    assert rows["full"]["share_of_full"] == pytest.approx(100.0)
    assert df["recipe"].to_list()[-1] == "full"
    md = table_markdown(df)
    assert "| mmssr_5pct | mmssr | 0.05 | 76.00 (95.0%)" in md and "2/3" in md
    # explicit random mapping
    df2 = paper_table(load_results(store), random_of={"mmssr_10pct": "random_5pct"})
    r10 = df2.filter(pl.col("recipe") == "mmssr_10pct").row(0, named=True)
    assert r10["beaten_random"] == 2 and r10["compared"] == 2
    # without a full run the share columns are null, the table still renders
    df3 = paper_table({k: v for k, v in load_results(store).items() if k != "full"})
    assert df3["share_of_full"].null_count() == df3.height
    assert "–" in table_markdown(df3)


def test_from_lmms_eval():
    from mmssr_core.downstream import from_lmms_eval

    obj = {
        "results": {
            "mme": {"alias": "mme", "mme_cognition_score,none": 300.5, "mme_percetion_score,none": 1500.0},
            "mmstar": {"alias": "mmstar", "average,none": 0.55, "average_stderr,none": "N/A"},
            "ai2d": {"alias": "ai2d", "exact_match,flexible-extract": 0.8, "exact_match_stderr,flexible-extract": 0.01},
        }
    }
    out = from_lmms_eval(obj, pick={"mme": "mme_percetion_score,none"})
    assert out["benchmarks"] == {"mme": 1500.0, "mmstar": 0.55, "ai2d": 0.8}
    with pytest.raises(DownstreamError, match="not an lmms-eval"):
        from_lmms_eval({"benchmarks": {}})


def test_cli_import_and_table(store, tmp_path, capsys):
    import argparse

    from mmssr_core.commands import downstream as cmd

    def run(*argv):
        p = argparse.ArgumentParser()
        cmd.add_arguments(p)
        return cmd.run(p.parse_args(list(argv)))

    full = tmp_path / "full.json"
    full.write_text(json.dumps({"benchmarks": {"A": 50.0}}))
    lmms = tmp_path / "lm.json"
    lmms.write_text(json.dumps({"results": {"A": {"alias": "A", "acc,none": 45.0}}}))
    assert run("import", "--store", str(store.root), "--recipe", "full", "--results", str(full)) == 0
    assert (
        run("import", "--store", str(store.root), "--recipe", "mmssr_5pct", "--results", str(lmms), "--lmms-eval") == 0
    )
    assert run("table", "--store", str(store.root), "--json") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {r["recipe"]: r for r in json.loads(lines[-1])["rows"]}
    assert rows["mmssr_5pct"]["share_of_full"] == pytest.approx(90.0)
    assert rows["mmssr_5pct"]["method"] == "mmssr" and rows["mmssr_5pct"]["budget"] == "0.05"  # from the default recipe
    assert rows["full"]["method"] == "full"
    assert any("45.00 (90.0%)" in line for line in lines)


CHECKER = r"""
import json, os, sys
dataset_dir, name, dataset, results = sys.argv[1:5]
info = json.load(open(os.path.join(dataset_dir, "dataset_info.json")))[name]
rows = json.load(open(dataset))  # the LLaVA file; LLaMA-Factory's entry names its ShareGPT twin
lf = json.load(open(os.path.join(dataset_dir, info["file_name"])))
assert len(lf) == len(rows) and [x["id"] for x in lf] == [r["id"] for r in rows]
assert all(len(x["images"]) == (len(r["image"]) if isinstance(r.get("image"), list) else int("image" in r))
           for x, r in zip(lf, rows))
missing = [r["image"] for r in rows if "image" in r and not os.path.exists(os.path.join(dataset_dir, r["image"]))]
assert not missing, missing
assert all(r["conversations"][0]["from"] == "human" for r in rows)
json.dump({"benchmarks": {"n": float(len(rows)), "images": float(sum("image" in r for r in rows))}}, open(results, "w"))
"""


def test_end_to_end_export_and_run(store, tmp_path, capsys):
    """Real export (LLaVA JSON + dataset_info.json) from a store, the command reads it back."""
    import argparse

    from test_report import make_pool, selection_of

    from mmssr_core.commands import downstream as cmd

    scores, raw = make_pool(tmp_path)
    for src in ("a", "b"):
        store.write("raw_pool", src, raw.filter(pl.col("source") == src))
    store.write("selections", "mmssr_5pct", selection_of(scores, [f"s{i:02d}" for i in range(12)]))
    script = tmp_path / "check.py"
    script.write_text(CHECKER)
    template = f"{sys.executable} {script} {{dataset_dir}} {{dataset_name}} {{dataset}} {{results}}"

    def run(*argv):
        p = argparse.ArgumentParser()
        cmd.add_arguments(p)
        return cmd.run(p.parse_args(list(argv)))

    assert run("run", "--store", str(store.root), "--recipe", "mmssr_5pct", "--command", template) == 0
    assert run("run", "--store", str(store.root), "--recipe", "full", "--full", "--command", template, "--json") == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["benchmarks"] == {"n": 40.0, "images": 36.0} and rec["method"] == "full"
    res = load_results(store)
    assert res["mmssr_5pct"]["benchmarks"] == {"n": 12.0, "images": 11.0}
    assert res["mmssr_5pct"]["method"] == "mmssr" and res["mmssr_5pct"]["budget"] == "0.05"
    df = paper_table(res)
    row = df.filter(pl.col("recipe") == "mmssr_5pct").row(0, named=True)
    assert row["n %full"] == pytest.approx(30.0)
    # a selection naming a sample the pool lacks: a clear error, nothing recorded
    store.write("selections", "bad", pl.DataFrame({"id": ["nope"], "source": ["a"]}))
    from mmssr_core.cli import CommandError

    with pytest.raises(CommandError, match="cannot export recipe 'bad'.*nope"):
        run("run", "--store", str(store.root), "--recipe", "bad", "--command", template)
    assert "bad" not in load_results(store)
