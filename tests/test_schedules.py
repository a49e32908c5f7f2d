"""Schedules: rescore only sources whose data or scorer changed; refresh stale selections."""

from __future__ import annotations

import datetime as dt
import os
import time

import dagster as dg
import polars as pl
import pytest

from dagster_support import slice_source
from mmssr_assets.resources import ScorerResource, SourcesResource, StoreResource
from mmssr_assets.schedules import build_refresh_schedule, rescore_changed_sources
from mmssr_core.recipes import Recipe
from mmssr_core.store import Store

WHEN = dt.datetime(2026, 11, 30, 2, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def _instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def instance(_instance):
    """One test instance per module (creating one costs seconds), with no source partitions."""
    for key in _instance.get_dynamic_partitions("sources"):
        _instance.delete_dynamic_partition("sources", key)
    return _instance


def _ctx(instance, store_root, sources_root, scorer=None):
    return dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=WHEN,
        resources={
            "store": StoreResource(root=str(store_root)),
            "sources": SourcesResource(root=str(sources_root)),
            "scorer": scorer or ScorerResource(),
        },
    )


def _record(st: Store, sources: SourcesResource, name: str, scorer: ScorerResource) -> None:
    st.write_json("fingerprints", name, {"data": sources.fingerprint(name), "scorer": scorer.fingerprint()})


def test_rescore_only_changed_sources(tmp_path, shared_data, instance):
    root, st = tmp_path / "sources", Store(tmp_path / "store")
    for name in ("a", "b", "c"):
        slice_source(root, shared_data, "tabmwp_dev1k", 5, name)
    instance.add_dynamic_partitions("sources", ["a", "b", "c"])
    sources, scorer = SourcesResource(root=str(root)), ScorerResource()

    # nothing scored yet: every source is due
    reqs = rescore_changed_sources(_ctx(instance, st.root, root))
    assert sorted(r.partition_key for r in reqs) == ["a", "b", "c"]
    assert {r.tags["mmssr/reason"] for r in reqs} == {"never scored"}

    for name in ("a", "b", "c"):
        _record(st, sources, name, scorer)
    assert isinstance(rescore_changed_sources(_ctx(instance, st.root, root)), dg.SkipReason)

    # data of b changed: only b, under a run key naming the new fingerprint
    pool = root / "b" / "pool.llava.json"
    pool.write_text(pool.read_text().replace("table", "Table", 1))
    os.utime(pool, ns=(time.time_ns(), time.time_ns() + 10**9))
    [req] = rescore_changed_sources(_ctx(instance, st.root, root))
    assert req.partition_key == "b" and req.tags["mmssr/reason"] == "data changed"
    assert req.run_key == f"rescore:b:{sources.fingerprint('b')}:{scorer.fingerprint()}"

    # a different scorer identity: everything is due again, with new run keys
    _record(st, sources, "b", scorer)
    other = ScorerResource(backend="rules", options={"sigma": 0.5})
    assert other.fingerprint() != scorer.fingerprint()
    reqs = rescore_changed_sources(_ctx(instance, st.root, root, other))
    assert sorted(r.partition_key for r in reqs) == ["a", "b", "c"]
    assert {r.tags["mmssr/reason"] for r in reqs} == {"scorer changed"}
    assert all(other.fingerprint() in r.run_key for r in reqs)


def test_folder_removed_is_not_rescored(tmp_path, shared_data, instance):
    root, st = tmp_path / "sources", Store(tmp_path / "store")
    slice_source(root, shared_data, "tabmwp_dev1k", 3, "a")
    instance.add_dynamic_partitions("sources", ["a", "gone"])
    reqs = rescore_changed_sources(_ctx(instance, st.root, root))
    assert [r.partition_key for r in reqs] == ["a"]


def _scores(st: Store, source: str) -> None:
    df = pl.DataFrame({"id": ["x"], "source": [source]})
    st.write("capability_scores", source, df)
    st.write("style_labels", source, df)


def test_refresh_selections_after_scoring(tmp_path, instance):
    st = Store(tmp_path / "store")
    recipes = [Recipe("r5", budget=0.05), Recipe("r10", budget=0.1)]
    from mmssr_assets.jobs import select_and_report_job

    schedule = build_refresh_schedule(recipes, select_and_report_job)
    instance.add_dynamic_partitions("sources", ["s"])
    ctx = lambda: _ctx(instance, st.root, tmp_path)  # noqa: E731

    assert isinstance(schedule(ctx()), dg.SkipReason)  # no scores yet
    _scores(st, "s")
    reqs = schedule(ctx())
    assert sorted(r.partition_key for r in reqs) == ["r10", "r5"]
    assert {r.run_key for r in reqs} == {"refresh:r5:2026-11-30", "refresh:r10:2026-11-30"}

    for r in recipes:  # selections newer than the scores: nothing to do
        st.write_json("selections", r.name, {"recipe": r.to_dict()})
    assert isinstance(schedule(ctx()), dg.SkipReason)

    time.sleep(0.02)
    _scores(st, "s")  # rescored after selecting
    assert sorted(r.partition_key for r in schedule(ctx())) == ["r10", "r5"]

    for r in recipes:
        st.write_json("selections", r.name, {"recipe": r.to_dict()})
    st.write_json("selections", "r5", {"recipe": Recipe("r5", budget=0.07).to_dict()})  # recipe edited
    [req] = schedule(ctx())
    assert req.partition_key == "r5" and req.tags["mmssr/reason"] == "recipe changed"


def test_schedules_are_registered_and_not_eager():
    from mmssr_assets.definitions import build_definitions

    defs = build_definitions()
    names = {s.name: s for s in defs.schedules}
    assert names["rescore_changed_sources"].job_name == "ingest_and_score"
    assert names["refresh_selections"].job_name == "select_and_report"
    # explicit schedules, no eager() automation (it never fills partitions that already existed)
    for assets_def in defs.assets:
        assert all(c is None for c in assets_def.automation_conditions_by_key.values()), assets_def
