"""Kill-and-resume: a scoring subprocess SIGKILLed mid-run resumes from its flushed chunks.

The subprocess scores through the openai backend against a test server living in this process, so the
server's request counts show exactly what the restarted run recomputed.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import polars as pl
import pytest
from _scoring_pool import write_pool

from mmssr_core.prompts import PromptSet
from mmssr_core.scoring.base import get_backend
from mmssr_core.scoring.cache import ScoreCache, resolve, successes
from mmssr_core.taxonomy import Taxonomy
from mmssr_core.testing.testserver import TestServer

N = 24
TARGETS = len(Taxonomy().keys) + 1  # 14 capabilities + styles: requests per sample


def _work(srv) -> int:
    """Requests that scored something (each run also sends one probe asking which inputs the server feeds)."""
    return srv.requests - srv.served["probe"]


def cli(store, url, *extra):
    return [
        sys.executable,
        "-m",
        "mmssr_core.cli",
        "score",
        "--store",
        str(store.root),
        "--source",
        "tab",
        "--backend",
        "openai",
        "--base-url",
        url,
        "--model",
        "test-scorer",
        "--concurrency",
        "2",
        "--batch-size",
        "2",
        "--chunk-size",
        "4",
        "--option",
        "backoff_base=0.01",
        "--json",
        *extra,
    ]


def complete_hashes(store) -> set[str]:
    backend = get_backend("openai", base_url="http://127.0.0.1:9/v1", model="test-scorer")
    ident = backend.identity(PromptSet.from_taxonomy(Taxonomy()))
    backend.close()
    cache = ScoreCache(store, ident)
    ok = successes(resolve(cache.lookup()))
    if ok.is_empty():
        return set()
    counts = ok.group_by("content_hash").len()
    return set(counts.filter(pl.col("len") == TARGETS)["content_hash"].to_list())


def wait_for(pred, timeout=60.0):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def check_final(store, stdout: str):
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["failed"] == 0 and summary["total"] == N
    caps = store.read("capability_scores", "tab")
    styles = store.read("style_labels", "tab")
    raw = store.read("raw_pool", "tab")
    for df in (caps, styles):
        assert df.height == N and df["id"].n_unique() == N
        assert df["id"].to_list() == raw["id"].to_list()
    keys = Taxonomy().keys
    assert caps.select(pl.any_horizontal([pl.col(k).is_null() for k in keys]).sum()).item() == 0
    assert styles["styles"].null_count() == 0
    assert store.read("score_failures", "tab").height == 0
    return summary


@pytest.mark.slow
def test_sigkill_mid_run_resumes_without_redoing_finished_chunks(store, shared_data, repo_root):
    write_pool(store, "tab", shared_data, "tabmwp", N)
    with TestServer(latency=0.01) as srv:
        proc = subprocess.Popen(cli(store, srv.url), cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            cache_dir = lambda: [p for p in (store.root / "score_cache").rglob("*.parquet")]  # noqa: E731
            wait_for(lambda: len(cache_dir()) >= 2 or proc.poll() is not None)
            assert proc.poll() is None, "the run finished before it could be killed: slow the server down"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        time.sleep(0.3)  # let the server finish answering the dead client's in-flight requests
        done = complete_hashes(store)
        assert 0 < len(done) < N
        assert not store.exists("capability_scores", "tab")  # killed before the tables were written
        srv.reset_counters()
        out = subprocess.run(cli(store, srv.url), cwd=repo_root, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        summary = check_final(store, out.stdout)
        # only the samples without a finished chunk were asked for again, each exactly once per target
        assert _work(srv) == (N - len(done)) * TARGETS
        assert summary["cached"] == len(done) and summary["scored"] == N - len(done)


@pytest.mark.slow
def test_repeated_kills_at_random_moments(store, shared_data, repo_root):
    write_pool(store, "tab", shared_data, "tabmwp", N)
    rng = random.Random(7)
    with TestServer(latency=0.01) as srv:
        for _ in range(4):
            proc = subprocess.Popen(cli(store, srv.url), cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.3, 2.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            # whatever the moment, the cache holds only whole chunks (temp files are never read)
            complete_hashes(store)
        time.sleep(0.3)
        before = complete_hashes(store)
        srv.reset_counters()
        out = subprocess.run(cli(store, srv.url), cwd=repo_root, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        check_final(store, out.stdout)
        assert _work(srv) == (N - len(before)) * TARGETS
        # and a further run computes nothing
        srv.reset_counters()
        out = subprocess.run(cli(store, srv.url), cwd=repo_root, capture_output=True, text=True, timeout=300)
        assert json.loads(out.stdout.strip().splitlines()[-1])["cached"] == N
        assert _work(srv) == 0
