"""Schedules read Dagster's stale status: what they request on a fresh instance, and when they wait.

The end-to-end behaviour (a changed pool, another scorer, an edited recipe) is in test_freshness.py.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest
from dagster_support import slice_source

from mmssr_core.recipes import Recipe
from mmssr_core.store import Store

WHEN = dt.datetime(2026, 11, 30, 2, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _tick(instance, defs, name: str):
    with dg.build_schedule_context(
        instance=instance,
        repository_def=defs.get_repository_def(),
        resources=defs.resources,
        scheduled_execution_time=WHEN,
    ) as ctx:
        return defs.resolve_schedule_def(name)(ctx)


def _defs(tmp_path, recipes=None):
    from mmssr_assets.definitions import build_definitions

    return build_definitions(store_root=tmp_path / "store", sources_root=tmp_path / "sources", recipes=recipes)


def test_rescore_requests_unmaterialized_sources_and_skips_gone_folders(tmp_path, shared_data, instance):
    slice_source(tmp_path / "sources", shared_data, "tabmwp_dev1k", 3, "a")
    instance.add_dynamic_partitions("sources", ["a", "gone"])
    [req] = _tick(instance, _defs(tmp_path), "rescore_changed_sources")
    assert req.partition_key == "a" and req.tags["mmssr/reason"] == "raw_pool missing"
    assert req.run_key.startswith("rescore:a:") and req.run_key.endswith(
        ":scorer-" + _defs(tmp_path).resources["scorer"].fingerprint()
    )
    # the schedule observed the folder on its way: its version is on record
    from mmssr_assets.freshness import latest_version

    assert latest_version(instance, "source_folder", "a", observed=True) is not None


def test_rescore_reruns_a_source_materialized_before_its_folder_was_observed(tmp_path, shared_data, instance):
    """A raw_pool run that did not observe its folder (a UI click on raw_pool alone, on an instance that
    never observed any folder) read no observation, so Dagster could never tell it stale: the schedule
    runs that source once, observing first; after that run it is fresh and not requested again."""
    slice_source(tmp_path / "sources", shared_data, "tabmwp_dev1k", 3, "a")
    instance.add_dynamic_partitions("sources", ["a"])
    defs = _defs(tmp_path)
    keys = [dg.AssetKey(k) for k in ("raw_pool", "capability_scores", "style_labels")]
    job = defs.resolve_job_def("ingest_and_score")
    assert job.execute_in_process(partition_key="a", instance=instance, asset_selection=keys).success
    [req] = _tick(instance, defs, "rescore_changed_sources")
    assert req.tags["mmssr/reason"] == "raw_pool was materialized before source_folder was observed"
    assert job.execute_in_process(partition_key="a", instance=instance).success
    assert isinstance(_tick(instance, defs, "rescore_changed_sources"), dg.SkipReason)


def test_refresh_waits_for_scores(tmp_path, instance):
    result = _tick(instance, _defs(tmp_path), "refresh_selections")
    assert isinstance(result, dg.SkipReason) and "no scored source" in result.skip_message


def test_refresh_registers_new_recipes_and_requests_missing_selections(tmp_path, instance):
    st = Store(tmp_path / "store")
    df = pl.DataFrame({"id": ["x"], "source": ["s"]})
    st.write("capability_scores", "s", df)
    st.write("style_labels", "s", df)
    instance.add_dynamic_partitions("sources", ["s"])
    recipes = [Recipe("r5", budget=0.05), Recipe("r10", budget=0.1)]
    reqs = _tick(instance, _defs(tmp_path, recipes), "refresh_selections")
    assert instance.get_dynamic_partitions("recipes") == ["r5", "r10"]
    assert sorted(r.partition_key for r in reqs) == ["r10", "r5"]
    assert {r.run_key for r in reqs} == {"refresh:r5:2026-11-30", "refresh:r10:2026-11-30"}
    assert {r.tags["mmssr/reason"] for r in reqs} == {"scores_table missing"}


def test_schedules_are_registered_and_not_eager():
    from mmssr_assets.definitions import build_definitions

    defs = build_definitions()
    names = {s.name: s for s in defs.schedules}
    assert names["rescore_changed_sources"].job_name == "ingest_and_score"
    assert names["refresh_selections"].job_name == "select_and_report"
    # explicit schedules, no eager() automation (it never fills partitions that already existed)
    for assets_def in defs.assets:
        assert all(c is None for c in assets_def.automation_conditions_by_key.values()), assets_def
