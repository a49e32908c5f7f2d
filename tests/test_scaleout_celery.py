"""The scale-out profile end to end, on one box: Redis, Postgres, two Celery workers, two vLLM stand-ins.

`dagster dev` (webserver + daemon) on a Postgres instance (deploy/celery/dagster.yaml), the celery executor
($MMSSR_EXECUTOR=celery, deploy/celery/celery_config.yaml), one worker on the default queue and one on the
`gpu` queue, the openai backend over two local OpenAI-compatible test servers for the capability scores and
the rules backend for the styles. A backfill over three sources (launched over GraphQL) runs as three runs;
mid-way one replica is killed and the GPU worker's process is SIGKILLed in the middle of a source. The run
retry (run_retries) finishes that source from the scoring cache. Checked: steps ran on both workers, both
replicas served, every sample is scored, the retry reused flushed chunks, and the tables equal a
single-process computation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from dagster_support import (
    ADD_PARTITION,
    BACKFILL_STATUS,
    LAUNCH_BACKFILL,
    REPO_SELECTOR,
    graphql_request,
    slice_source,
)
from services import Processes, free_port, postgres_available, postgres_server, redis_available, redis_server, wait_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not redis_available(), reason="redis-server not installed"),
    pytest.mark.skipif(not postgres_available(), reason="postgresql not installed"),
]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SOURCES = {"tab": ("tabmwp_dev1k", 12, 0), "mathv": ("math_vision_testmini", 12, 0), "tab2": ("tabmwp_dev1k", 12, 40)}
CHUNK = 3  # samples per cache flush in this test (run config of the backfill)


class GraphQL:
    def __init__(self, url: str):
        self.url = url

    def __call__(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        return graphql_request(self.url, query, variables, timeout)


def wait_until(pred, timeout: float, what: str, every: float = 0.5, on_timeout=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")


def tail(path: Path, n: int = 3000) -> str:
    try:
        return f"--- {path.name} ---\n" + path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def pool_child(pid: int) -> int | None:
    """The pid of the (single) prefork pool process under a `dagster-celery worker start` process."""
    import psutil

    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    mains = [p for p in procs if any("worker" in a for a in p.cmdline()) and p.children()]
    for m in mains:
        kids = m.children()
        if kids:
            return kids[0].pid
    return None


def run_errors(instance, run) -> list[str]:
    """The error texts of a run's failure events (step failures, run failure, engine errors)."""
    import dagster as dg

    out = []
    for rec in instance.all_logs(run.run_id):
        ev = rec.dagster_event
        if ev is None or ev.event_type not in (
            dg.DagsterEventType.STEP_FAILURE,
            dg.DagsterEventType.RUN_FAILURE,
            dg.DagsterEventType.ENGINE_EVENT,
        ):
            continue
        err = getattr(ev.event_specific_data, "error", None)
        if err is not None:
            out.append(f"{ev.event_type.value} {ev.step_key or ''}: {err.to_string()}")
        elif ev.event_type != dg.DagsterEventType.ENGINE_EVENT:
            out.append(f"{ev.event_type.value} {ev.step_key or ''}: {ev.message or ''}")
    return out


def describe_runs(instance, runs) -> str:
    """One line per run (id, partition, status, parent) and the errors it failed with: what a red CI shows."""
    lines = []
    for r in runs:
        part = r.tags.get("dagster/asset_partition_range_start", r.tags.get("dagster/partition"))
        parent = r.tags.get("dagster/parent_run_id", "")[:8] or "-"
        lines.append(f"run {r.run_id[:8]} partition={part} status={r.status.value} parent={parent}")
        lines += [f"  {e[:1500]}" for e in run_errors(instance, r)]
    return "\n".join(lines)


def test_backfill_runs_on_celery_workers_over_two_replicas(tmp_path, shared_data, monkeypatch):
    from mmssr_core.testing.testserver import TestServer

    sources_root, store_root, home, logs = (tmp_path / d for d in ("sources", "store", "home", "logs"))
    for d in (home, logs):
        d.mkdir()
    for name, (pool, n, offset) in SOURCES.items():
        slice_source(sources_root, shared_data, pool, n, name, offset=offset)
    # the profile's instance, with the `gpu` pool sized to this box's GPU worker processes (one), as the
    # profile's own comment says, and a 5 s monitoring poll instead of 30 s. With a pool of 1 the test also
    # checks that the slot of the killed scoring step is freed (free_slots_after_run_end_seconds): if it
    # were not, no other source could ever be scored and the backfill would time out.
    instance_yaml = (REPO / "deploy" / "celery" / "dagster.yaml").read_text()
    for old, new in (
        ("    default_limit: 2\n", "    default_limit: 1\n"),
        ("  poll_interval_seconds: 30\n", "  poll_interval_seconds: 5\n"),
    ):
        assert old in instance_yaml, old
        instance_yaml = instance_yaml.replace(old, new)
    assert "free_slots_after_run_end_seconds" in instance_yaml
    (home / "dagster.yaml").write_text(instance_yaml)

    procs = Processes()
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        pg = stack.enter_context(postgres_server())
        # two vLLM stand-ins; each completion takes 0.12 s (in parallel), so scoring lasts long enough to
        # kill things in the middle of it
        a = stack.enter_context(TestServer(latency=0.12))
        b = stack.enter_context(TestServer(latency=0.12))
        stack.callback(procs.stop_all)  # first out: Dagster and the workers stop before the services
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "DAGSTER_HOME": str(home),
            **pg.env(),
            "MMSSR_EXECUTOR": "celery",
            "MMSSR_CELERY_BROKER": f"{redis_url}/0",
            "MMSSR_CELERY_BACKEND": f"{redis_url}/1",
            "MMSSR_STORE": str(store_root),
            "MMSSR_SOURCES_ROOT": str(sources_root),
            "MMSSR_BACKEND": "openai",
            "MMSSR_MODEL": a.model,
            "MMSSR_BASE_URL": f"{a.url},{b.url}",
            "MMSSR_STYLES_BACKEND": "rules",
            "PYTHONUNBUFFERED": "1",
        }
        # automation (sensor, schedules) off: the backfill is the only source of runs here
        for k in (
            "MMSSR_CELERY_CONFIG",
            "MMSSR_GPU_QUEUE",
            "MMSSR_API_KEY",
            "MMSSR_TAXONOMY",
            "MMSSR_RECIPES",
            "MMSSR_BACKEND_OPTIONS",
            "MMSSR_AUTOMATION",
        ):
            env.pop(k, None)
        for k in ("DAGSTER_HOME", *pg.env()):
            monkeypatch.setenv(k, env[k])

        # the schema first, as docs/scale-out.md says: processes creating it at the same moment collide
        migrate = subprocess.run(
            [str(BIN / "dagster"), "instance", "migrate"],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

        from mmssr_assets.executors import celery_worker_args

        workers = {}
        for queue, name in (("dagster", "default"), ("gpu", "gpu")):
            args = celery_worker_args(queue, name=name, concurrency=1)
            workers[name] = procs.start(
                f"worker-{name}",
                [str(BIN / "dagster-celery"), *args],
                env=env,
                cwd=REPO,
                log=logs / f"worker-{name}.log",
            )
        port = free_port()
        dev = procs.start(
            "dagster-dev",
            [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
            env=env,
            cwd=REPO,
            log=logs / "dagster-dev.log",
            stop_signal=signal.SIGINT,
        )
        all_logs = lambda: "\n".join(tail(p) for p in sorted(logs.iterdir()))  # noqa: E731
        gql = GraphQL(f"http://127.0.0.1:{port}")

        def location_loaded():
            try:
                data = gql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }", timeout=5)
                return bool(data["repositoriesOrError"].get("nodes"))
            except OSError:
                return False

        try:
            wait_port(port, 150, dev, "dagster dev")
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}\n{all_logs()}") from None
        wait_until(location_loaded, 150, "the code location", every=1, on_timeout=all_logs)
        for name in workers:
            wait_until(
                lambda name=name: "ready" in tail(logs / f"worker-{name}.log", 20000),
                120,
                f"celery worker {name}",
                on_timeout=all_logs,
            )

        for name in SOURCES:
            out = gql(
                ADD_PARTITION,
                {"repositorySelector": REPO_SELECTOR, "partitionsDefName": "sources", "partitionKey": name},
            )["addDynamicPartition"]
            assert out["__typename"] == "AddDynamicPartitionSuccess", out
        params = {
            "partitionNames": list(SOURCES),
            "assetSelection": [{"path": ["raw_pool"]}, {"path": ["capability_scores"]}, {"path": ["style_labels"]}],
            "runConfigData": {"ops": {"score_source": {"config": {"chunk_size": CHUNK, "batch_size": CHUNK}}}},
            "title": "scale-out test",
        }
        out = gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert out["__typename"] == "LaunchBackfillSuccess", out
        backfill_id = out["backfillId"]

        # -- faults in the middle of the work ----------------------------------------------------
        n_samples = sum(n for _, n, _ in SOURCES.values())
        expected = n_samples * 14  # one completion per (sample, capability)
        cache_root = store_root / "score_cache"

        def chunks_flushed() -> int:
            return sum(1 for p in cache_root.rglob("*.parquet")) if cache_root.is_dir() else 0

        # (1) the GPU worker's process dies mid-source: after its first flushed chunk
        wait_until(lambda: chunks_flushed() >= 1, 200, "a first flushed scoring chunk", every=0.2, on_timeout=all_logs)
        served_before_kill = a.total_served + b.total_served
        child = pool_child(workers["gpu"].pid)
        assert child is not None, "no pool process under the gpu worker"
        os.kill(child, signal.SIGKILL)
        assert served_before_kill < expected

        # (2) a replica dies once the scoring is well under way again
        wait_until(
            lambda: a.served["score"] + b.served["score"] >= served_before_kill + expected // 4,
            240,
            "scoring to resume after the worker death",
            on_timeout=all_logs,
        )
        a.stop()
        a_served_at_kill = a.served["score"]

        # -- wait for the backfill and every run (retries included) -------------------------------
        def backfill_done():
            st = gql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            return st if st.get("status") not in ("REQUESTED", None) else None

        status = wait_until(backfill_done, 300, "the backfill", every=2, on_timeout=all_logs)

        import dagster as dg

        instance = stack.enter_context(dg.DagsterInstance.get())

        def runs_settled():
            runs = instance.get_runs()
            busy = [r for r in runs if not r.is_finished]
            return runs if runs and not busy else None

        runs = wait_until(runs_settled, 120, "all runs to finish", every=2, on_timeout=all_logs)

        # -- checks ------------------------------------------------------------------------------
        by_partition: dict[str, list] = {}
        for r in runs:
            # an asset backfill tags each run with its partition range: one partition per run here
            start = r.tags.get("dagster/asset_partition_range_start", r.tags.get("dagster/partition"))
            end = r.tags.get("dagster/asset_partition_range_end", start)
            assert start == end, r.tags
            by_partition.setdefault(start, []).append(r)
        assert set(by_partition) == set(SOURCES), {k: len(v) for k, v in by_partition.items()}
        originals = [r for r in runs if "dagster/parent_run_id" not in r.tags]
        retries = [r for r in runs if "dagster/parent_run_id" in r.tags]
        # a backfill over N sources is N runs, one partition each
        assert len(originals) == len(SOURCES), [(r.run_id, r.tags) for r in originals]
        # the run whose GPU worker died failed with the worker loss (never an op or check failure: those are
        # not retried), and its retry (from the failed step) succeeded
        failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
        assert len(failed) == 1, describe_runs(instance, runs) + "\n" + all_logs()
        assert any("WorkerLostError" in e for e in run_errors(instance, failed[0])), describe_runs(instance, runs)
        assert [r.status for r in retries] == [dg.DagsterRunStatus.SUCCESS], describe_runs(instance, runs)
        assert retries[0].tags["dagster/parent_run_id"] == failed[0].run_id, describe_runs(instance, runs)
        for name, rs in by_partition.items():
            assert any(r.status == dg.DagsterRunStatus.SUCCESS for r in rs), (name, [r.status for r in rs])
        assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (status, all_logs())

        # steps ran on both workers: scoring on the gpu worker, everything else on the default one
        workers_of: dict[str, set] = {}
        for r in runs:
            for rec in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                ev = rec.dagster_event
                meta = getattr(ev.event_specific_data, "metadata", None) or {}
                if "Celery worker" in meta:
                    workers_of.setdefault(ev.step_key, set()).add(meta["Celery worker"].value.split("@")[0])
        assert workers_of.get("score_source") == {"gpu"}, workers_of
        others = {w for k, ws in workers_of.items() if k != "score_source" for w in ws}
        assert others == {"default"}, workers_of
        assert "raw_pool" in workers_of

        # the retry resumed: its scoring step reused the chunks flushed before the kill
        mats = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("capability_scores")), limit=20
        ).records
        retry_meta = [m.asset_materialization.metadata for m in mats if m.run_id == retries[0].run_id]
        assert retry_meta, "the retry did not materialize capability_scores"
        assert retry_meta[0]["cached"].value >= CHUNK, retry_meta[0]
        assert retry_meta[0]["failed"].value == 0

        # dagster-celery's re-registration warning is filtered in the run processes (mmssr_assets.executors)
        assert "DuplicateTaskNameWarning" not in (logs / "dagster-dev.log").read_text(errors="replace")

        # both replicas served; after the kill only B did, and nothing was lost
        assert a_served_at_kill > 0 and b.served["score"] > 0
        assert a.served["score"] == a_served_at_kill

        # -- results: every sample scored, equal to a single-process computation -----------------
        from mmssr_core.scoring.openai_backend import OpenAIBackend
        from mmssr_core.scoring.rules import RulesBackend
        from mmssr_core.scoring.runner import score_source
        from mmssr_core.store import Store
        from mmssr_core.taxonomy import load_taxonomy

        st = Store(store_root)
        single = Store(tmp_path / "single")
        keys = load_taxonomy().keys
        b.latency = 0.0  # the single-process reference need not wait
        for name in SOURCES:
            caps = st.read("capability_scores", name).sort("id")
            styles = st.read("style_labels", name).sort("id")
            assert caps.height == SOURCES[name][1]
            assert caps.select(keys).null_count().sum_horizontal().item() == 0, name
            assert styles["styles"].null_count() == 0
            assert not st.exists("score_failures", name) or st.read("score_failures", name).height == 0
            single.write("raw_pool", name, st.read("raw_pool", name))
            be = OpenAIBackend(base_url=b.url, model=b.model)
            try:
                score_source(single, name, be, taxonomy=load_taxonomy(), targets=("capabilities",))
            finally:
                be.close()
            score_source(single, name, RulesBackend(), taxonomy=load_taxonomy(), targets=("styles",))
            assert caps.equals(single.read("capability_scores", name).sort("id")), name
            assert styles.equals(single.read("style_labels", name).sort("id")), name
            # two scorers, one per table: the openai replicas for capabilities, the rules for styles
            assert caps["scorer"].str.starts_with(f"openai:{a.model}").all()
            assert styles["scorer"].str.starts_with("rules").all()
