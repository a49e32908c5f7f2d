"""Sensors: a new folder (recipe) yields a partition and a run request; a known one does not; a changed
one yields an observation (its downstream partition turns stale) but no run."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from dagster_support import link_source, record_events, slice_source

from mmssr_assets.resources import RecipesResource, SourcesResource, StoreResource
from mmssr_assets.sensors import new_recipes_sensor, new_sources_sensor
from mmssr_core.recipes import Recipe


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _evaluate(instance, root):
    with dg.build_sensor_context(instance=instance, resources={"sources": SourcesResource(root=str(root))}) as ctx:
        return new_sources_sensor(ctx)


def test_new_folder_becomes_partition_and_run(tmp_path, shared_data, instance):
    root = tmp_path / "sources"
    link_source(root, shared_data, "llava_bench")
    (root / "empty_folder").mkdir()  # no pool file: not a source
    (root / "notes.txt").write_text("not a folder")
    result = _evaluate(instance, root)
    assert isinstance(result, dg.SensorResult)
    [add] = result.dynamic_partitions_requests
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert add.partitions_def_name == "sources" and list(add.partition_keys) == ["llava_bench"]
    [req] = result.run_requests
    assert req.partition_key == "llava_bench"
    assert req.run_key.startswith("new-source:llava_bench:")
    # observed at once, so whatever materializes it next has an observation to be compared against later
    assert [(e.asset_key.to_user_string(), e.partition) for e in result.asset_events] == [
        ("source_folder", "llava_bench")
    ]


def test_known_folder_yields_nothing_and_only_the_new_one_runs(tmp_path, shared_data, instance):
    root = tmp_path / "sources"
    link_source(root, shared_data, "llava_bench")
    instance.add_dynamic_partitions("sources", ["llava_bench"])
    record_events(instance, _evaluate(instance, root))  # first look: the folder's version is recorded
    assert isinstance(_evaluate(instance, root), dg.SkipReason)  # unchanged since: nothing at all

    link_source(root, shared_data, "math_vision_testmini", "mathv")
    result = _evaluate(instance, root)
    assert [r.partition_key for r in result.run_requests] == ["mathv"]
    assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["mathv"]]
    assert [e.partition for e in result.asset_events] == ["mathv"]  # the known, unchanged one is not re-observed


def test_changed_folder_is_observed_not_run(tmp_path, shared_data, instance):
    root = tmp_path / "sources"
    slice_source(root, shared_data, "tabmwp_dev1k", 3, "a")
    slice_source(root, shared_data, "tabmwp_dev1k", 3, "b", offset=10)
    instance.add_dynamic_partitions("sources", ["a", "b"])
    first = _evaluate(instance, root)
    assert sorted(e.partition for e in first.asset_events) == ["a", "b"] and not first.run_requests
    record_events(instance, first)
    pool = root / "b" / "pool.llava.json"
    pool.write_text(json.dumps(json.loads(pool.read_text())[:2]))  # b lost a sample
    result = _evaluate(instance, root)
    [obs] = result.asset_events
    assert obs.asset_key == dg.AssetKey("source_folder") and obs.partition == "b"
    assert obs.tags["dagster/data_version"] == SourcesResource(root=str(root)).fingerprint("b")
    assert not result.run_requests  # rescoring a changed source is the schedule's job


def test_missing_root_is_a_skip_not_a_crash(tmp_path, instance):
    result = _evaluate(instance, tmp_path / "nowhere")
    assert isinstance(result, dg.SkipReason) and "does not exist" in result.skip_message


def _recipes_tick(instance, store_root, recipes):
    resources = {"store": StoreResource(root=str(store_root)), "recipes": RecipesResource.of(recipes)}
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        return new_recipes_sensor(ctx)


def test_new_recipe_becomes_partition_and_runs_once_scores_exist(tmp_path, instance):
    recipes = [Recipe("r5", budget=0.05)]
    result = _recipes_tick(instance, tmp_path, recipes)
    assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["r5"]]
    assert not result.run_requests  # nothing scored yet: selecting would fail
    record_events(instance, result)
    instance.add_dynamic_partitions("recipes", ["r5"])
    instance.report_runless_asset_event(dg.AssetMaterialization("capability_scores", partition="s"))
    assert isinstance(_recipes_tick(instance, tmp_path, recipes), dg.SkipReason)
    result = _recipes_tick(instance, tmp_path, [*recipes, Recipe("r10", budget=0.1)])
    assert [r.partition_key for r in result.run_requests] == ["r10"]
    assert [e.partition for e in result.asset_events] == ["r10"]
    edited = _recipes_tick(instance, tmp_path, [Recipe("r5", budget=0.07)])
    assert [(e.asset_key.to_user_string(), e.partition) for e in edited.asset_events] == [("recipe", "r5")]


def test_sensors_target_their_jobs():
    from mmssr_assets.definitions import build_definitions

    with dg.instance_for_test():
        defs = build_definitions()
        assert defs.resolve_sensor_def("new_sources_sensor").job_name == "ingest_and_score"
        assert defs.resolve_sensor_def("new_recipes_sensor").job_name == "select_and_report"
