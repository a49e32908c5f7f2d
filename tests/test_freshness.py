"""Dagster-native freshness on a real (SQLite) instance: what a changed pool, a touched file, another scorer
or an edited recipe makes stale, read through the stale-status resolver the UI uses, and what clears it.

Each test materializes two small real sources (a, b) and two recipes through `mmssr materialize`'s code,
then changes one thing. Dagster marks a partition stale when its code version changed or a direct input
has a new data version; the schedules follow the chain from there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import dagster as dg
import pytest
from dagster_support import record_events, slice_source, stale_map

N = 12
RECIPES_TOML = """
replace_defaults = true
[[recipe]]
name = "r20"
budget = 0.2
[[recipe]]
name = "r50"
budget = 0.5
"""
AGREEMENT = {"scorer_agreement": "MISSING"}  # never materialized by the demo (needs teacher labels)
WHEN = dt.datetime(2026, 11, 30, 4, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def graph(tmp_path, shared_data):
    from mmssr_assets.materialize import materialize_all

    root, store = tmp_path / "sources", tmp_path / "store"
    slice_source(root, shared_data, "tabmwp_dev1k", N, "a")
    slice_source(root, shared_data, "tabmwp_dev1k", N, "b", offset=300)
    store.mkdir()
    (store / "recipes.toml").write_text(RECIPES_TOML)
    with dg.instance_for_test() as instance:
        summary = materialize_all(sources_root=root, store_root=store, instance=instance, progress=lambda m: None)
        assert summary.ok, summary.failures
        yield {"root": root, "store": store, "instance": instance}


def _defs(g, **kw):
    from mmssr_assets.definitions import build_definitions

    return build_definitions(store_root=g["store"], sources_root=g["root"], **kw)


def _run(defs, g, job: str, partition: str, **kw):
    result = defs.resolve_job_def(job).execute_in_process(
        partition_key=partition, instance=g["instance"], raise_on_error=False, **kw
    )
    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    return result


def _latest(instance, key: str, partition: str | None = None):
    filt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None)
    return instance.fetch_materializations(filt, limit=1).records[0].event_log_entry


def _version(instance, key: str, partition: str | None = None) -> str:
    return _latest(instance, key, partition).tags["dagster/data_version"]


# Contexts are used as context managers: the instance they open from the test instance's reference is
# then closed in order (left to the garbage collector, it would reset Dagster's current defs-state storage
# in a later test).
def _sensor(defs, g, name: str = "new_sources_sensor"):
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(
        instance=g["instance"], repository_def=defs.get_repository_def(), resources=defs.resources
    ) as ctx:
        result = sensor(ctx)
    record_events(g["instance"], result)
    return result


def _schedule(defs, g, name: str):
    with dg.build_schedule_context(
        instance=g["instance"],
        repository_def=defs.get_repository_def(),
        resources=defs.resources,
        scheduled_execution_time=WHEN,
    ) as ctx:
        return defs.resolve_schedule_def(name)(ctx)


def _freshness(defs, g):
    from mmssr_assets.freshness import Freshness

    return Freshness(g["instance"], defs.resolve_asset_graph())


def test_a_changed_pool_makes_exactly_its_chain_stale(graph):
    defs = _defs(graph)
    assert stale_map(graph["instance"], defs) == AGREEMENT
    pool = graph["root"] / "b" / "pool.llava.json"
    samples = json.loads(pool.read_text())
    samples[0]["conversations"][0]["value"] += " Answer briefly."
    pool.write_text(json.dumps(samples))

    # the sensor observes the changed folder: only b's raw pool turns stale, because of b's folder
    result = _sensor(defs, graph)
    assert [(e.asset_key.to_user_string(), e.partition) for e in result.asset_events] == [("source_folder", "b")]
    assert stale_map(graph["instance"], defs) == {"raw_pool[b]": "STALE", **AGREEMENT}
    assert _freshness(defs, graph).causes("raw_pool", "b") == ["source_folder[b]: has a new data version"]

    # the rescoring schedule asks for b alone; its run re-ingests b (a new content version) and rescores it
    [req] = _schedule(defs, graph, "rescore_changed_sources")
    assert req.partition_key == "b" and "source_folder[b]" in req.tags["mmssr/reason"]
    before = _version(graph["instance"], "raw_pool", "b")
    _run(defs, graph, "ingest_and_score", "b")
    assert _version(graph["instance"], "raw_pool", "b") != before
    assert stale_map(graph["instance"], defs) == {"scores_table": "STALE", **AGREEMENT}
    assert _freshness(defs, graph).causes("scores_table") == [
        "capability_scores[b]: has a new data version",
        "style_labels[b]: has a new data version",
    ]
    assert isinstance(_schedule(defs, graph, "rescore_changed_sources"), dg.SkipReason)

    # the refresh schedule asks for every recipe; after the first run only the other recipe is stale
    reqs = _schedule(defs, graph, "refresh_selections")
    assert sorted(r.partition_key for r in reqs) == ["r20", "r50"]
    _run(defs, graph, "select_and_report", "r20")
    assert stale_map(graph["instance"], defs) == {
        "selected_subset[r50]": "STALE",
        "eval_report[r50]": "STALE",
        **AGREEMENT,
    }
    _run(defs, graph, "select_and_report", "r50")
    assert stale_map(graph["instance"], defs) == AGREEMENT
    assert isinstance(_schedule(defs, graph, "refresh_selections"), dg.SkipReason)


def test_a_touched_file_is_reingested_but_nothing_downstream_turns_stale(graph):
    defs = _defs(graph)
    pool = graph["root"] / "a" / "pool.llava.json"
    os.utime(pool, ns=(time.time_ns(), time.time_ns() + 10**9))  # same bytes, new mtime
    _sensor(defs, graph)
    assert stale_map(graph["instance"], defs) == {"raw_pool[a]": "STALE", **AGREEMENT}
    before = {k: _version(graph["instance"], k, "a") for k in ("raw_pool", "capability_scores", "style_labels")}
    _run(defs, graph, "ingest_and_score", "a")
    assert _latest(graph["instance"], "raw_pool", "a").asset_materialization.metadata["unchanged"].value is False
    # same samples -> same content version -> same score versions: the scores table stays fresh
    assert {k: _version(graph["instance"], k, "a") for k in before} == before
    assert stale_map(graph["instance"], defs) == AGREEMENT


def test_another_scorer_marks_every_scores_partition_stale_and_not_the_pools(graph):
    from mmssr_assets.resources import ScorerResource

    defs = _defs(graph, scorer=ScorerResource(options={"sigma": 0.5}))
    stale = {f"{k}[{s}]": "STALE" for k in ("capability_scores", "style_labels") for s in "ab"}
    assert stale_map(graph["instance"], defs) == {**stale, **AGREEMENT}
    assert _freshness(defs, graph).causes("capability_scores", "a") == ["capability_scores[a]: has a new code version"]
    reqs = _schedule(defs, graph, "rescore_changed_sources")
    assert sorted(r.partition_key for r in reqs) == ["a", "b"]
    assert all("new code version" in r.tags["mmssr/reason"] for r in reqs)
    for s in "ab":
        result = _run(defs, graph, "ingest_and_score", s)
        raw = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("raw_pool")]
        assert raw[0].step_materialization_data.materialization.metadata["unchanged"].value is True  # kept
        caps = _latest(graph["instance"], "capability_scores", s).asset_materialization.metadata
        assert caps["scored"].value == N and caps["cached"].value == 0  # a new scorer: nothing from the cache
    assert stale_map(graph["instance"], defs) == {"scores_table": "STALE", **AGREEMENT}


def test_an_edited_recipe_marks_its_selection_stale(graph):
    defs = _defs(graph)
    toml = graph["store"] / "recipes.toml"
    toml.write_text(RECIPES_TOML.replace("budget = 0.5", "budget = 0.4"))
    [req] = _schedule(defs, graph, "refresh_selections")  # it observes the recipes first
    assert req.partition_key == "r50" and "recipe[r50]" in req.tags["mmssr/reason"]
    assert stale_map(graph["instance"], defs) == {"selected_subset[r50]": "STALE", **AGREEMENT}
    _run(defs, graph, "select_and_report", "r50")
    assert stale_map(graph["instance"], defs) == AGREEMENT
    meta = _latest(graph["instance"], "selected_subset", "r50").asset_materialization.metadata
    assert meta["requested"].value == int(0.4 * 2 * N)
