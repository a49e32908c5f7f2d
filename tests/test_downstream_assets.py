"""The Dagster side of the downstream loop: downstream_run per recipe (fake command), downstream_eval table."""

from __future__ import annotations

import json
import sys

import polars as pl
import pytest

dg = pytest.importorskip("dagster")

from mmssr_assets.assets.downstream import DownstreamResource, build_downstream_assets  # noqa: E402
from mmssr_assets.assets.selection import selected_subset  # noqa: E402
from mmssr_assets.resources import RecipesResource, StoreResource  # noqa: E402
from mmssr_core.recipes import Recipe  # noqa: E402
from mmssr_core.store import Store  # noqa: E402

FAKE = r"""
import json, os, sys
dataset, results = sys.argv[1], sys.argv[2]
if os.environ.get("FAKE_FAIL"):
    print("boom: no GPU", file=sys.stderr); sys.exit(7)
n = len(json.load(open(dataset)))
json.dump({"benchmarks": {"A": 40.0 + n, "B": 10.0 * n}}, open(results, "w"))
"""


@pytest.fixture(scope="module")
def instance():
    """A real instance holding the recipe partitions (they are dynamic)."""
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("recipes", ["r5", "rand5"])
        yield inst


@pytest.fixture
def setup(tmp_path, monkeypatch, instance):
    st = Store(tmp_path / "store")
    pool = pl.DataFrame({"id": [f"s{i}" for i in range(10)], "source": ["a"] * 10})
    st.write("raw_pool", "a", pool)
    st.write("selections", "r5", pool.head(5))
    st.write("selections", "rand5", pool.tail(5))

    def fake_export(store, recipe, selection, out_dir, *, fmt="llava"):
        out_dir.mkdir(parents=True, exist_ok=True)
        p = out_dir / f"{recipe}.json"
        p.write_text(json.dumps(selection.select("id").to_dicts()))
        return {
            "dataset": str(p),
            "dataset_dir": str(out_dir),
            "dataset_name": recipe,
            "dataset_info": "",
            "image_root": "",
        }

    # the exporter belongs to the export module; the asset wiring is what is tested here
    monkeypatch.setattr("mmssr_core.downstream.export_for_training", fake_export)
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    recipes = [Recipe("r5", budget=5), Recipe("rand5", method="random", budget=5)]
    assets = build_downstream_assets()
    resources = {
        "store": StoreResource(root=str(st.root)),
        "recipes": RecipesResource.of(recipes),
        "downstream": DownstreamResource(command=f"{sys.executable} {script} {{dataset}} {{results}}", timeout_s=60),
    }
    return st, [selected_subset, *assets], resources, instance


def test_run_and_table(setup):
    st, assets, resources, instance = setup
    for key in ("r5", "rand5"):
        res = dg.materialize(
            assets, selection=["downstream_run"], partition_key=key, resources=resources, instance=instance
        )
        assert res.success
        bench = res.asset_materializations_for_node("downstream_run")[0].metadata["benchmarks"].value
        assert [r.data for r in bench.records] == [{"benchmark": "A", "score": 45.0}, {"benchmark": "B", "score": 50.0}]
    res = dg.materialize(assets, selection=["downstream_full_run"], resources=resources, instance=instance)
    assert res.success
    full = json.loads((st.root / "downstream" / "full.json").read_text())
    assert full["benchmarks"] == {"A": 50.0, "B": 100.0} and full["method"] == "full"
    res = dg.materialize(assets, selection=["downstream_eval"], resources=resources, instance=instance)
    assert res.success
    mats = res.asset_materializations_for_node("downstream_eval")
    meta = mats[0].metadata
    assert meta["share_of_full/r5"].value == pytest.approx((45 / 50 + 50 / 100) / 2 * 100)
    assert meta["beaten_random/r5"].value == 0  # same sizes -> same fake scores: nothing beaten
    rows = {r.data["recipe"]: r.data for r in meta["table"].value.records}
    assert rows["r5"]["method"] == "mmssr" and rows["r5"]["budget"] in (5, "5")
    table = pl.read_parquet(st.root / "downstream" / "table.parquet")
    assert set(table["recipe"]) == {"r5", "rand5", "full"}


def test_failed_run_keeps_results(setup, monkeypatch):
    st, assets, resources, instance = setup
    assert dg.materialize(
        assets, selection=["downstream_run"], partition_key="r5", resources=resources, instance=instance
    ).success
    before = (st.root / "downstream" / "r5.json").read_bytes()
    monkeypatch.setenv("FAKE_FAIL", "1")
    res = dg.materialize(
        assets,
        selection=["downstream_run"],
        partition_key="r5",
        resources=resources,
        raise_on_error=False,
        instance=instance,
    )
    assert not res.success
    failure = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"][0]
    text = str(failure.event_specific_data.error)
    assert "exit code 7" in text and "boom: no GPU" in text
    assert (st.root / "downstream" / "r5.json").read_bytes() == before


def test_no_command_is_a_clear_failure(setup, monkeypatch):
    _, assets, resources, instance = setup
    monkeypatch.delenv("MMSSR_TRAIN_EVAL_CMD", raising=False)
    resources = {**resources, "downstream": DownstreamResource()}
    res = dg.materialize(
        assets,
        selection=["downstream_run"],
        partition_key="r5",
        resources=resources,
        raise_on_error=False,
        instance=instance,
    )
    assert not res.success
    failure = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "MMSSR_TRAIN_EVAL_CMD" in str(failure.event_specific_data.error)


def test_downstream_assets_join_the_graph_only_when_enabled(monkeypatch):
    """The demo never trains a model: the train-and-evaluate assets stay out of the default graph."""
    from mmssr_assets.definitions import build_definitions

    def keys(defs):
        return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}

    monkeypatch.delenv("MMSSR_DOWNSTREAM", raising=False)
    assert not {"downstream_run", "downstream_full_run", "downstream_eval"} & keys(build_definitions())
    monkeypatch.setenv("MMSSR_DOWNSTREAM", "on")
    enabled = build_definitions().resolve_asset_graph()
    assert {"downstream_run", "downstream_full_run", "downstream_eval"} <= {
        k.to_user_string() for k in enabled.get_all_asset_keys()
    }
    assert "Not run by the demo" in enabled.get(dg.AssetKey("downstream_run")).description
