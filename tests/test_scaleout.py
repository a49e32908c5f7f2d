"""The scale-out profile as configuration: executor selection, queue routing, deploy files, scorer split."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from services import postgres_available, postgres_server

from mmssr_assets import executors as ex

REPO = Path(__file__).resolve().parent.parent


def test_executor_is_chosen_by_env():
    assert ex.build_executor({}) is dg.in_process_executor
    assert ex.build_executor({"MMSSR_EXECUTOR": "multiprocess"}) is dg.multi_or_in_process_executor
    celery = ex.build_executor({"MMSSR_EXECUTOR": "celery", "MMSSR_CELERY_BROKER": "redis://h:1/0"})
    assert celery.name == "celery"
    with pytest.raises(ex.ExecutorConfigError, match="choose one of"):
        ex.build_executor({"MMSSR_EXECUTOR": "dask"})


def test_celery_executor_silences_only_the_duplicate_task_name_warning():
    import warnings

    from celery.exceptions import DuplicateTaskNameWarning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ex.build_executor({"MMSSR_EXECUTOR": "celery", "MMSSR_CELERY_BROKER": "redis://h:1/0"})
        warnings.warn(
            "Task name 'execute_plan' is already registered to a different callable.", DuplicateTaskNameWarning
        )
        warnings.warn("Task name 'other' is already registered to a different callable.", DuplicateTaskNameWarning)
    assert [str(w.message) for w in seen] == ["Task name 'other' is already registered to a different callable."]


def test_celery_config_is_the_workers_yaml_with_env_urls():
    from dagster._config import process_config
    from dagster_celery import celery_executor

    env = {"MMSSR_CELERY_BROKER": "redis://broker:6379/0", "MMSSR_CELERY_BACKEND": "redis://broker:6379/1"}
    cfg = ex.celery_executor_config(env)
    # URLs are env sources (resolved in the run's process), never baked into the definitions
    assert cfg["broker"] == {"env": "MMSSR_CELERY_BROKER"} and cfg["backend"] == {"env": "MMSSR_CELERY_BACKEND"}
    assert cfg["config_source"]["worker_prefetch_multiplier"] == 1
    assert cfg["config_source"]["task_acks_late"] is False
    # valid for dagster-celery's executor schema, and what a worker started with -y resolves
    import os

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        res = process_config(celery_executor.config_schema.config_type, cfg)
        assert res.success, res.errors
        assert res.value["broker"] == "redis://broker:6379/0"
        from dagster_celery.cli import get_validated_config

        worker = get_validated_config(str(ex.DEFAULT_CELERY_CONFIG))
        assert worker["broker"] == res.value["broker"] and worker["backend"] == res.value["backend"]
        assert worker["config_source"] == res.value["config_source"]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_celery_config_defaults_and_other_file(tmp_path):
    cfg = ex.celery_executor_config(
        {"MMSSR_CELERY_CONFIG": str(_write(tmp_path / "c.yaml", "execution:\n  config: {}\n"))}
    )
    assert cfg["broker"] == ex.DEFAULT_BROKER and cfg["backend"] == ex.DEFAULT_BROKER
    with pytest.raises(ex.ExecutorConfigError, match="no such file"):
        ex.celery_executor_config({"MMSSR_CELERY_CONFIG": str(tmp_path / "missing.yaml")})


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_gpu_op_tags_route_to_the_gpu_queue_and_request_gpus_on_k8s():
    assert ex.gpu_op_tags({}) == {"dagster-celery/queue": "gpu"}
    assert ex.gpu_op_tags({"MMSSR_GPU_QUEUE": "a100"})["dagster-celery/queue"] == "a100"
    k8s = ex.gpu_op_tags({"MMSSR_EXECUTOR": "k8s", "MMSSR_K8S_STEP_GPUS": "2"})["dagster-k8s/config"]
    assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "dagster-k8s/config" not in ex.gpu_op_tags({"MMSSR_EXECUTOR": "k8s", "MMSSR_K8S_STEP_GPUS": "0"})


def test_only_the_scoring_step_goes_to_the_gpu_queue(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSSR_EXECUTOR", "celery")
    monkeypatch.setenv("MMSSR_CELERY_BROKER", "redis://127.0.0.1:1/0")
    from mmssr_assets.definitions import build_definitions

    defs = build_definitions(store_root=tmp_path / "store", sources_root=tmp_path / "sources")
    job = defs.resolve_job_def("ingest_and_score")
    assert job.executor_def.name == "celery"
    queues = {}
    for node in job.graph.node_dict.values():
        queues[node.name] = node.definition.tags.get("dagster-celery/queue")
    assert queues.pop("score_source") == "gpu"
    assert queues and set(queues.values()) == {None}, queues  # everything else: the default queue
    score = job.graph.node_dict["score_source"].definition
    assert score.pool == "gpu"


def test_split_scorer_and_several_replicas_are_expressible_in_env(monkeypatch):
    from mmssr_assets.resources import default_scorer

    monkeypatch.setenv("MMSSR_BACKEND", "openai")
    monkeypatch.setenv("MMSSR_MODEL", "m")
    monkeypatch.setenv("MMSSR_BASE_URL", "http://a:8000/v1, http://b:8000/v1")
    monkeypatch.setenv("MMSSR_STYLES_BACKEND", "rules")
    monkeypatch.setenv("MMSSR_BACKEND_OPTIONS", '{"concurrency": 3}')
    scorer = default_scorer()
    backend = scorer.get_backend()
    try:
        assert [r.url for r in backend.pool.replicas] == ["http://a:8000/v1", "http://b:8000/v1"]
        assert [r.limit for r in backend.pool.replicas] == [3, 3]  # per-replica concurrency
    finally:
        backend.close()
    assert scorer.get_styles_backend().name == "rules"
    monkeypatch.delenv("MMSSR_STYLES_BACKEND")
    assert default_scorer().get_styles_backend() is None
    assert default_scorer().fingerprint() != scorer.fingerprint()


def test_worker_command_line():
    args = ex.celery_worker_args("gpu", name="gpu", concurrency=2)
    assert args[:4] == ["worker", "start", "-A", "dagster_celery.app"]
    assert args[args.index("-q") + 1] == "gpu" and args[args.index("-y") + 1].endswith("celery_config.yaml")
    assert args[-2:] == ["--", "--concurrency=2"]
    assert args[args.index("-i") + 1] == "mmssr_assets.definitions"


def test_deploy_files_are_valid_yaml_with_the_expected_settings():
    import yaml

    inst = yaml.safe_load((REPO / "deploy/celery/dagster.yaml").read_text())
    assert inst["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert inst["run_retries"]["enabled"] is True
    assert inst["concurrency"]["pools"]["granularity"] == "op"
    # every shipped instance frees the pool slots of a run whose step died without reporting its end
    for path in (".dagster_home/dagster.yaml", "deploy/dagster.postgres.yaml", "deploy/celery/dagster.yaml"):
        monitoring = yaml.safe_load((REPO / path).read_text())["run_monitoring"]
        assert monitoring["enabled"] is True and monitoring["free_slots_after_run_end_seconds"] > 0, path
    values = yaml.safe_load((REPO / "deploy/k8s/values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runMonitoring"]["freeSlotsAfterRunEndSeconds"] > 0
    env = {e["name"]: e["value"] for e in values["dagster-user-deployments"]["deployments"][0]["env"]}
    assert env["MMSSR_EXECUTOR"] == "k8s" and "," in env["MMSSR_BASE_URL"]


@pytest.mark.slow
@pytest.mark.skipif(not postgres_available(), reason="postgresql not installed")
def test_instance_on_postgres_from_the_deploy_file(tmp_path, monkeypatch):
    """deploy/celery/dagster.yaml gives a working instance on a private Postgres (tests/services.py)."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "deploy/celery/dagster.yaml", home / "dagster.yaml")
    with postgres_server() as pg:
        for k, v in {"DAGSTER_HOME": str(home), **pg.env()}.items():
            monkeypatch.setenv(k, v)
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            instance.add_dynamic_partitions("sources", ["a", "b"])
            assert set(instance.get_dynamic_partitions("sources")) == {"a", "b"}
            instance.event_log_storage.set_concurrency_slots("gpu", 3)
            assert instance.event_log_storage.get_pool_limits()[0].limit == 3
            assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
