"""The Dagster side of the downstream loop: downstream_run per recipe (fake command), downstream_eval table."""

from __future__ import annotations

import json
import sys

import polars as pl
import pytest

dg = pytest.importorskip("dagster")
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")

from mmssr_assets.assets.downstream import DownstreamResource, build_downstream_assets  # noqa: E402
from mmssr_assets.assets.selection import build_selected_subset  # noqa: E402
from mmssr_assets.resources import StoreResource  # noqa: E402
from mmssr_core.recipes import Recipe  # noqa: E402
from mmssr_core.store import Store  # noqa: E402

FAKE = r'''
import json, os, sys
dataset, results = sys.argv[1], sys.argv[2]
if os.environ.get("FAKE_FAIL"):
    print("boom: no GPU", file=sys.stderr); sys.exit(7)
n = len(json.load(open(dataset)))
json.dump({"benchmarks": {"A": 40.0 + n, "B": 10.0 * n}}, open(results, "w"))
'''


@pytest.fixture
def setup(tmp_path, monkeypatch):
    st = Store(tmp_path / "store")
    pool = pl.DataFrame({"id": [f"s{i}" for i in range(10)], "source": ["a"] * 10})
    st.write("raw_pool", "a", pool)
    st.write("selections", "r5", pool.head(5))
    st.write("selections", "rand5", pool.tail(5))

    def fake_export(store, recipe, selection, out_dir, *, fmt="llava"):
        out_dir.mkdir(parents=True, exist_ok=True)
        p = out_dir / f"{recipe}.json"
        p.write_text(json.dumps(selection.select("id").to_dicts()))
        return {"dataset": str(p), "dataset_dir": str(out_dir), "dataset_name": recipe, "dataset_info": "", "image_root": ""}

    # the exporter belongs to the export module; the asset wiring is what is tested here
    monkeypatch.setattr("mmssr_core.downstream.export_for_training", fake_export)
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    recipes = [Recipe("r5", budget=5), Recipe("rand5", method="random", budget=5)]
    sel = build_selected_subset(recipes)
    assets = build_downstream_assets(recipes, sel)
    resources = {
        "store": StoreResource(root=str(st.root)),
        "downstream": DownstreamResource(command=f"{sys.executable} {script} {{dataset}} {{results}}", timeout_s=60),
    }
    return st, [sel, *assets], resources, script


def test_run_and_table(setup):
    st, assets, resources, _ = setup
    for key in ("r5", "rand5"):
        res = dg.materialize(assets, selection=["downstream_run"], partition_key=key, resources=resources)
        assert res.success
    res = dg.materialize(assets, selection=["downstream_full_run"], resources=resources)
    assert res.success
    full = json.loads((st.root / "downstream" / "full.json").read_text())
    assert full["benchmarks"] == {"A": 50.0, "B": 100.0} and full["method"] == "full"
    res = dg.materialize(assets, selection=["downstream_eval"], resources=resources)
    assert res.success
    mats = res.asset_materializations_for_node("downstream_eval")
    meta = mats[0].metadata
    assert meta["share_of_full/r5"].value == pytest.approx((45 / 50 + 50 / 100) / 2 * 100)
    assert meta["beaten_random/r5"].value == 0  # same sizes -> same fake scores: nothing beaten
    assert "| r5 | mmssr | 5 |" in meta["table"].value
    table = pl.read_parquet(st.root / "downstream" / "table.parquet")
    assert set(table["recipe"]) == {"r5", "rand5", "full"}


def test_failed_run_keeps_results(setup, monkeypatch):
    st, assets, resources, _ = setup
    assert dg.materialize(assets, selection=["downstream_run"], partition_key="r5", resources=resources).success
    before = (st.root / "downstream" / "r5.json").read_bytes()
    monkeypatch.setenv("FAKE_FAIL", "1")
    res = dg.materialize(assets, selection=["downstream_run"], partition_key="r5", resources=resources, raise_on_error=False)
    assert not res.success
    failure = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"][0]
    text = str(failure.event_specific_data.error)
    assert "exit code 7" in text and "boom: no GPU" in text
    assert (st.root / "downstream" / "r5.json").read_bytes() == before


def test_no_command_is_a_clear_failure(setup, monkeypatch):
    _, assets, resources, _ = setup
    monkeypatch.delenv("MMSSR_TRAIN_EVAL_CMD", raising=False)
    resources = {**resources, "downstream": DownstreamResource()}
    res = dg.materialize(assets, selection=["downstream_run"], partition_key="r5", resources=resources, raise_on_error=False)
    assert not res.success
    failure = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "MMSSR_TRAIN_EVAL_CMD" in str(failure.event_specific_data.error)
