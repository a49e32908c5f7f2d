"""new_sources_sensor: a new folder yields a partition and a run request; a known one does not."""

from __future__ import annotations

import dagster as dg

from dagster_support import link_source
from mmssr_assets.resources import SourcesResource
from mmssr_assets.sensors import new_sources_sensor


def _evaluate(instance, root):
    ctx = dg.build_sensor_context(instance=instance, resources={"sources": SourcesResource(root=str(root))})
    return new_sources_sensor(ctx)


def test_new_folder_becomes_partition_and_run(tmp_path, shared_data):
    root = tmp_path / "sources"
    link_source(root, shared_data, "llava_bench")
    (root / "empty_folder").mkdir()  # no pool file: not a source
    (root / "notes.txt").write_text("not a folder")
    instance = dg.DagsterInstance.ephemeral()
    result = _evaluate(instance, root)
    assert isinstance(result, dg.SensorResult)
    [add] = result.dynamic_partitions_requests
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert add.partitions_def_name == "sources" and list(add.partition_keys) == ["llava_bench"]
    [req] = result.run_requests
    assert req.partition_key == "llava_bench"
    assert req.run_key.startswith("new-source:llava_bench:")


def test_known_folder_yields_nothing_and_only_the_new_one_runs(tmp_path, shared_data):
    root = tmp_path / "sources"
    link_source(root, shared_data, "llava_bench")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("sources", ["llava_bench"])
    result = _evaluate(instance, root)
    assert isinstance(result, dg.SkipReason) or not result.run_requests

    link_source(root, shared_data, "math_vision_testmini", "mathv")
    result = _evaluate(instance, root)
    assert [r.partition_key for r in result.run_requests] == ["mathv"]
    assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["mathv"]]


def test_missing_root_is_a_skip_not_a_crash(tmp_path):
    result = _evaluate(dg.DagsterInstance.ephemeral(), tmp_path / "nowhere")
    assert isinstance(result, dg.SkipReason) and "does not exist" in result.skip_message


def test_sensor_targets_the_per_source_job():
    from mmssr_assets.definitions import build_definitions

    # Resolve under a live instance: an earlier test's instance may have been garbage-collected
    # while Dagster's global defs-state storage still points at it.
    with dg.instance_for_test():
        defs = build_definitions()
        sensor = defs.resolve_sensor_def("new_sources_sensor")
    assert sensor.job_name == "ingest_and_score"
