"""Which executor runs the steps of a run: one laptop or many machines, chosen by configuration.

`$MMSSR_EXECUTOR` picks it, the same value in every process that loads the code location (webserver,
daemon, run workers, Celery workers):

- `in_process` (default): every step in the run's process.
- `multiprocess`: one subprocess per step (`execution: {config: {multiprocess: {max_concurrent: N}}}`).
- `k8s`: every step is a Kubernetes Job (dagster-k8s `k8s_job_executor`, settings inherited from the
  instance's `K8sRunLauncher`: image, env, volumes); the scoring step's pod asks for
  `$MMSSR_K8S_STEP_GPUS` (default 1) `nvidia.com/gpu` through the `dagster-k8s/config` op tag, set 0 when
  it only talks to vLLM servers (openai backend). See deploy/k8s/values.yaml.
- `celery`: every step is a Celery task (dagster-celery) on a broker (Redis). Steps tagged with
  `GPU_OP_TAGS` (the scoring step) go to the `gpu` queue, served only by workers started with `-q gpu` on
  GPU hosts; every other step goes to the default queue (`dagster`). The executor reads the same YAML the
  workers are started with (`$MMSSR_CELERY_CONFIG`, default `deploy/celery/celery_config.yaml` of the current
  folder), so the two sides cannot disagree on broker, backend or Celery settings; `$MMSSR_CELERY_BROKER`
  and `$MMSSR_CELERY_BACKEND` override its URLs (they are read when a run starts, in the run's process).

GPU concurrency is bounded twice: by the number of `gpu` worker processes (`--concurrency`) and by the
Dagster pool `gpu` of the scoring step (`dagster instance concurrency set gpu N`), which also holds for
the in-process and multiprocess executors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

ENV_EXECUTOR = "MMSSR_EXECUTOR"
ENV_CELERY_CONFIG = "MMSSR_CELERY_CONFIG"
ENV_CELERY_BROKER = "MMSSR_CELERY_BROKER"
ENV_CELERY_BACKEND = "MMSSR_CELERY_BACKEND"
ENV_GPU_QUEUE = "MMSSR_GPU_QUEUE"
ENV_K8S_STEP_GPUS = "MMSSR_K8S_STEP_GPUS"

EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")
CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG (no import needed)
K8S_CONFIG_TAG = "dagster-k8s/config"
DEFAULT_QUEUE = "dagster"  # dagster-celery's default queue
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
# relative to the current folder (the repository's root, where workers and `dagster dev` are started);
# elsewhere set $MMSSR_CELERY_CONFIG
DEFAULT_CELERY_CONFIG = Path("deploy") / "celery" / "celery_config.yaml"


class ExecutorConfigError(ValueError):
    pass


def gpu_op_tags(env: dict | None = None) -> dict:
    """Op tags of the steps that need a GPU (or a vLLM endpoint).

    Always the Celery queue (inert under other executors); under `k8s` also the pod's GPU request.
    """
    env = os.environ if env is None else env
    tags: dict = {CELERY_QUEUE_TAG: env.get(ENV_GPU_QUEUE) or "gpu"}
    if (env.get(ENV_EXECUTOR) or "").strip().lower() == "k8s":
        try:
            gpus = int(env.get(ENV_K8S_STEP_GPUS) or 1)
        except ValueError:
            raise ExecutorConfigError(f"${ENV_K8S_STEP_GPUS} must be an integer") from None
        if gpus > 0:
            tags[K8S_CONFIG_TAG] = {
                "container_config": {
                    "resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}}
                },
                "pod_spec_config": {
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
                },
            }
    return tags


# What the scoring asset passes as `op_tags` (computed once, when the code location loads).
GPU_OP_TAGS: dict = gpu_op_tags()


def executor_name(env: dict | None = None) -> str:
    env = os.environ if env is None else env
    name = (env.get(ENV_EXECUTOR) or "in_process").strip().lower().replace("-", "_")
    if name not in EXECUTORS:
        raise ExecutorConfigError(f"${ENV_EXECUTOR}={name!r}: choose one of {', '.join(EXECUTORS)}")
    return name


def celery_config_path(env: dict | None = None) -> Path | None:
    env = os.environ if env is None else env
    if env.get(ENV_CELERY_CONFIG):
        path = Path(env[ENV_CELERY_CONFIG])
        if not path.is_file():
            raise ExecutorConfigError(f"${ENV_CELERY_CONFIG}={path}: no such file")
        return path
    return DEFAULT_CELERY_CONFIG.resolve() if DEFAULT_CELERY_CONFIG.is_file() else None


def celery_executor_config(env: dict | None = None) -> dict[str, Any]:
    """The `celery_executor` config: the workers' YAML (`execution: config:`), URLs overridable from env.

    Env overrides are passed as `{"env": NAME}` sources, so a broker password never lands in the
    definitions or the run config; they resolve in the process that runs the executor.
    """
    env = os.environ if env is None else env
    config: dict[str, Any] = {}
    path = celery_config_path(env)
    if path is not None:
        import yaml

        parsed = yaml.safe_load(path.read_text()) or {}
        execution = parsed.get("execution") or {}
        config = dict(execution.get("config") or execution.get("celery") or {})
    if env.get(ENV_CELERY_BROKER):
        config["broker"] = {"env": ENV_CELERY_BROKER}
    if env.get(ENV_CELERY_BACKEND):
        config["backend"] = {"env": ENV_CELERY_BACKEND}
    config.setdefault("broker", DEFAULT_BROKER)
    if "backend" not in config:
        # the result backend defaults to the broker's Redis (rpc:// needs AMQP)
        config["backend"] = config["broker"]
    return config


def build_executor(env: dict | None = None) -> dg.ExecutorDefinition:
    """The executor named by $MMSSR_EXECUTOR (see the module docstring)."""
    name = executor_name(env)
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multi_or_in_process_executor
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:  # pragma: no cover - not installed here
            raise ExecutorConfigError(f"${ENV_EXECUTOR}=k8s needs dagster-k8s==0.29.27") from None
        return k8s_job_executor
    try:
        from dagster_celery import celery_executor
    except ImportError:  # pragma: no cover - depends on the install
        raise ExecutorConfigError(f"${ENV_EXECUTOR}=celery needs dagster-celery: pip install 'mmssr[celery]'") from None
    _quiet_duplicate_task_name()
    return celery_executor.configured(celery_executor_config(env), name="celery")


def _quiet_duplicate_task_name() -> None:
    """dagster-celery registers its `execute_plan` task again for every step it submits; Celery then warns
    (eight log lines per step) that the first registration is kept. That one is equivalent, so the
    warning is noise: filter exactly it."""
    import warnings

    try:
        from celery.exceptions import DuplicateTaskNameWarning
    except ImportError:  # pragma: no cover - older Celery without the warning
        return
    warnings.filterwarnings(
        "ignore", message=r"Task name 'execute_plan' is already registered", category=DuplicateTaskNameWarning
    )


def celery_worker_args(
    queue: str = DEFAULT_QUEUE,
    *,
    name: str | None = None,
    config_yaml: str | os.PathLike | None = None,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    includes: tuple[str, ...] = ("mmssr_assets.definitions",),
) -> list[str]:
    """Arguments of `dagster-celery worker start` for one worker (what docs and tests run).

    `includes` are imported by the worker's main process, so forked pool processes start with the code
    location loaded (and a replacement after a crash too)."""
    config_yaml = config_yaml or celery_config_path() or DEFAULT_CELERY_CONFIG
    args = ["worker", "start", "-A", "dagster_celery.app", "-y", str(config_yaml), "-q", queue, "--loglevel", loglevel]
    for module in includes:
        args += ["-i", module]
    if name:
        args += ["--name", name]
    if concurrency:
        args += ["--", f"--concurrency={concurrency}"]
    return args
