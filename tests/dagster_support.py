"""Builders for the Dagster tests: sources roots over the real shared pools, `dagster dev`, GraphQL.

Services (Redis, Postgres, ports, process groups) live in services.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from services import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


def link_source(root: Path, shared: Path, name: str, as_name: str | None = None) -> Path:
    """A source folder that is a symlink to a real shared pool (read-only, never written)."""
    root.mkdir(parents=True, exist_ok=True)
    dst = root / (as_name or name)
    dst.symlink_to(shared / name, target_is_directory=True)
    return dst


def slice_source(
    root: Path, shared: Path, name: str, n: int, as_name: str, *, bad: bool = False, offset: int = 0
) -> Path:
    """A source folder holding the first `n` samples (after `offset`) of a shared LLaVA pool and copies
    of their images; with `bad`, one extra sample whose image does not exist (quarantined)."""
    src = shared / name
    pool = json.loads((src / "pool.llava.json").read_text())[offset : offset + n]
    dst = root / as_name
    dst.mkdir(parents=True, exist_ok=True)
    for s in pool:
        img = s.get("image")
        if img:
            (dst / img).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / img, dst / img)
    if bad:
        pool.append(
            {
                "id": f"{as_name}_missing_image",
                "image": "tables/does_not_exist.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is shown?"},
                    {"from": "gpt", "value": "A table."},
                ],
            }
        )
    (dst / "pool.llava.json").write_text(json.dumps(pool))
    return dst


def graphql_request(url: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    """POST a query to a Dagster webserver's /graphql; GraphQL errors fail the test."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out = json.loads(resp.read())
    if out.get("errors"):
        raise AssertionError(f"GraphQL errors: {out['errors']}")
    return out["data"]


class DagsterDev:
    """`dagster dev -w workspace.yaml` (or, `dg=True`, `dg dev`: the project of pyproject's [tool.dg]) as a
    subprocess on 127.0.0.1; stopped with one SIGINT (a shell `&` would make it ignore SIGINT and SIGTERM)."""

    def __init__(self, home: Path, env: dict, cwd: Path = REPO_ROOT, log: Path | None = None, dg: bool = False):
        self.dg = dg
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
        self.cwd = cwd
        self.log = log or (home / "dagster_dev.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "DagsterDev":
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        fh = open(self.log, "wb")
        bin_dir = Path(sys.executable).parent
        where = [] if self.dg else ["-w", str(REPO_ROOT / "workspace.yaml")]
        self.proc = subprocess.Popen(
            [str(bin_dir / ("dg" if self.dg else "dagster")), "dev", "-h", "127.0.0.1", "-p", str(self.port), *where],
            cwd=self.cwd,
            env=self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def wait_ready(self, timeout: float = 180) -> "DagsterDev":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                data = self.graphql(
                    "{ repositoriesOrError { __typename ... on RepositoryConnection "
                    "{ nodes { name location { name } } } } }",
                    timeout=5,
                )
                nodes = data.get("repositoriesOrError", {}).get("nodes") or []
                if nodes:
                    return self
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"dagster dev did not serve the code location in {timeout}s:\n{self.tail()}")

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        return graphql_request(self.url, query, variables, timeout)

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


REPO_SELECTOR = {"repositoryLocationName": "mmssr", "repositoryName": "__repository__"}

START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename ... on PythonError { message } }
}"""

STALE_BY_PARTITION = """
query($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      staleStatusByPartition(partitions: $partitions)
      staleCausesByPartition(partitions: $partitions) { reason key { path } partitionKey dependency { path }
                                                        dependencyPartitionKey }
    }
  }
}"""

ADD_PARTITION = """
mutation($repositorySelector: RepositorySelector!, $partitionsDefName: String!, $partitionKey: String!) {
  addDynamicPartition(repositorySelector: $repositorySelector, partitionsDefName: $partitionsDefName,
                      partitionKey: $partitionKey) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on DuplicateDynamicPartitionError { partitionName }
  }
}"""

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
    ... on RunConflict { message }
  }
}"""

BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status numPartitions
      runs(limit: 50) { id status } }
    ... on PythonError { message }
  }
}"""


def wait_backfill(dev: DagsterDev, backfill_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    last = {}
    while time.monotonic() < deadline:
        last = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if last.get("status") in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
            return last
        time.sleep(2)
    raise AssertionError(f"backfill {backfill_id} not done after {timeout}s: {last}\n{dev.tail()}")


def stale_map(instance, defs) -> dict[str, str]:
    """Every asset partition of `defs` that Dagster does not report FRESH: "key[partition]" -> status
    (STALE or MISSING), read through the stale-status resolver the UI uses."""
    from mmssr_assets.freshness import Freshness

    graph = defs.resolve_asset_graph()
    fresh = Freshness(instance, graph)
    out = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        if node.is_external:
            continue
        parts = (
            node.partitions_def.get_partition_keys(dynamic_partitions_store=instance) if node.partitions_def else [None]
        )
        for p in parts:
            status = fresh.status(key, p)
            if status != "FRESH":
                out[key.to_user_string() + (f"[{p}]" if p else "")] = status
    return out


def record_events(instance, result) -> None:
    """Persist the asset events a sensor evaluated in a test returned (the daemon does it in production)."""
    for event in getattr(result, "asset_events", None) or []:
        instance.report_runless_asset_event(event)
