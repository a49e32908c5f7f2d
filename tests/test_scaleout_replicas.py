"""Scale-out scenario of the openai backend: several vLLM replicas behind one scoring step.

Spreading over base URLs, a failing replica taken out of rotation and back, per-replica concurrency, a
replica killed mid-source, and a worker killed mid-source (only the unflushed chunk is lost), all through
the real runner (`score_source`) with the split "openai for capabilities, rules for styles".
"""

from __future__ import annotations

import threading
import time

import polars as pl
import pytest
from _scoring_pool import write_pool

from mmssr_core.scoring.openai_backend import OpenAIBackend
from mmssr_core.scoring.rules import RulesBackend
from mmssr_core.scoring.runner import score_source
from mmssr_core.taxonomy import load_taxonomy
from mmssr_core.testing.testserver import TestServer

TAXONOMY = load_taxonomy()
KEYS = TAXONOMY.keys


class InFlight:
    """Counts completions a TestServer is working on at once (max over the test)."""

    def __init__(self, srv: TestServer):
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0
        record, served, fault = srv._record, srv._served, srv._count_fault

        def on_record(*a):
            with self.lock:
                self.now += 1
                self.max = max(self.max, self.now)
            return record(*a)

        def on_done(fn):
            def wrapped(*a):
                with self.lock:
                    self.now -= 1
                return fn(*a)

            return wrapped

        srv._record = on_record
        srv._served = on_done(served)
        srv._count_fault = on_done(fault)


def backend(*servers: TestServer, **kw) -> OpenAIBackend:
    kw.setdefault("concurrency", 4)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("timeout", 10)
    return OpenAIBackend(base_urls=[s.url for s in servers], model=servers[0].model, **kw)


def score_split(store, source, caps_backend, **kw):
    """Capabilities through the openai backend, styles through the rules backend: two runner calls."""
    r1 = score_source(store, source, caps_backend, taxonomy=TAXONOMY, targets=("capabilities",), **kw)
    r2 = score_source(store, source, RulesBackend(), taxonomy=TAXONOMY, targets=("styles",), **kw)
    return r1, r2


def tables(store, source):
    caps = store.read("capability_scores", source).sort("id")
    styles = store.read("style_labels", source).sort("id")
    return caps, styles


@pytest.fixture
def pool(store, shared_data):
    return write_pool(store, "tabmwp", shared_data, "tabmwp", n=24)


def test_requests_spread_over_replicas_and_results_do_not_depend_on_them(store, pool, tmp_path):
    from mmssr_core.store import Store

    with TestServer() as a, TestServer() as b:
        be = backend(a, b)
        try:
            r_caps, r_sty = score_split(store, "tabmwp", be, batch_size=8, chunk_size=8)
        finally:
            be.close()
        assert r_caps.failed == 0 and r_sty.failed == 0 and r_caps.scored == pool.height
        n = pool["content_hash"].n_unique() * len(KEYS)
        assert a.served["score"] + b.served["score"] == n
        # least-loaded choice with rotation: both replicas carry a real share
        assert min(a.served["score"], b.served["score"]) >= 0.3 * n, (a.served, b.served)
        stats = be.stats()["replicas"]
        # the client's per-replica counters agree with the servers' (plus the 6 /tokenize look-ups of the digits
        # and the one probe asking whether the server feeds the reference inputs)
        assert a.served["probe"] + b.served["probe"] == 1
        assert sum(s["served"] for s in stats) == n + 6 + 1
        assert all(abs(s["served"] - srv.served["score"]) <= 7 for s, srv in zip(stats, (a, b)))

        # one replica alone gives the same table: replicas are interchangeable (same identity, same cache)
        single = Store(tmp_path / "single")
        single.write("raw_pool", "tabmwp", store.read("raw_pool", "tabmwp"))
        be1 = backend(a)
        try:
            score_split(single, "tabmwp", be1, batch_size=8, chunk_size=8)
        finally:
            be1.close()
    c2, s2 = tables(single, "tabmwp")
    c1, s1 = tables(store, "tabmwp")
    assert c1.equals(c2) and s1.equals(s2)
    assert c1[KEYS].null_count().sum_horizontal().item() == 0
    assert s1["styles"].null_count() == 0
    assert c1["scorer"].unique().to_list() != s1["scorer"].unique().to_list()  # two scorers, one per table


def test_failing_replica_leaves_rotation_and_comes_back(store, pool):
    with TestServer() as a, TestServer() as b:
        a.inject("http_503", count=-1)
        be = backend(a, b, circuit_threshold=3, circuit_cooldown=0.3, circuit_max_cooldown=0.6)
        try:
            r = score_source(store, "tabmwp", be, taxonomy=TAXONOMY, targets=("capabilities",), chunk_size=8)
            assert r.failed == 0 and r.scored == pool.height
            st = be.stats()["replicas"]
            # while failing, A got only the attempts that tripped its breaker plus half-open probes
            assert st[0]["trips"] >= 1 and a.served["score"] == 0
            assert a.requests < 0.25 * b.requests, (a.requests, b.requests)
            assert b.served["score"] == pool["content_hash"].n_unique() * len(KEYS)

            # A recovers: after its cooldown a probe succeeds and it serves again
            a.clear_faults()
            time.sleep(0.7)
            before = a.served["score"]
            store.write(
                "raw_pool",
                "more",
                pool.with_columns(
                    pl.lit("more").alias("source"), (pl.col("content_hash") + "-more").alias("content_hash")
                ),
            )  # new hashes: not cached
            score_source(store, "more", be, taxonomy=TAXONOMY, targets=("capabilities",), chunk_size=8)
            st = be.stats()["replicas"]
            assert a.served["score"] - before >= 0.3 * pool.height * len(KEYS), (a.served, b.served)
            assert not st[0]["open"]
        finally:
            be.close()


def test_per_replica_concurrency_is_bounded(store, pool):
    with TestServer(latency=0.05) as a, TestServer(latency=0.05) as b:
        ia, ib = InFlight(a), InFlight(b)
        be = backend(a, b, concurrency=3)
        try:
            r = score_source(
                store, "tabmwp", be, taxonomy=TAXONOMY, targets=("capabilities",), batch_size=16, chunk_size=16
            )
        finally:
            be.close()
        assert r.failed == 0
        # never more than `concurrency` requests in flight on one replica, and the limit is actually used
        assert ia.max <= 3 and ib.max <= 3, (ia.max, ib.max)
        assert ia.max == 3 and ib.max == 3, (ia.max, ib.max)


def test_killed_replica_mid_source_still_scores_every_sample(store, pool):
    with TestServer(latency=0.01) as a, TestServer(latency=0.01) as b:
        be = backend(a, b, circuit_cooldown=5.0)
        killed = threading.Event()

        def progress(p):
            if p.done >= 8 and not killed.is_set():
                killed.set()
                a.stop()  # like a crashed vLLM process: refuses connections, cuts open ones

        try:
            r = score_source(
                store,
                "tabmwp",
                be,
                taxonomy=TAXONOMY,
                targets=("capabilities",),
                batch_size=4,
                chunk_size=4,
                progress=progress,
            )
        finally:
            be.close()
        assert killed.is_set()
        assert r.failed == 0 and r.scored == pool.height
        assert a.served["score"] > 0 and b.served["score"] > 0
        caps = store.read("capability_scores", "tabmwp")
        assert caps[KEYS].null_count().sum_horizontal().item() == 0
        assert be.stats()["replicas"][0]["trips"] >= 1


class WorkerDied(BaseException):
    """Stands for a worker process killed mid-step (not an Exception: nothing may catch it)."""


def test_worker_death_loses_only_the_unflushed_chunk_and_a_retry_finishes(store, pool):
    hashes = pool["content_hash"].n_unique()
    chunk = 8
    with TestServer() as a, TestServer() as b:
        be = backend(a, b)
        try:

            def die(p):
                if p.done >= chunk + 4:  # mid second chunk: chunk 1 flushed, chunk 2 half done
                    raise WorkerDied()

            with pytest.raises(WorkerDied):
                score_source(
                    store,
                    "tabmwp",
                    be,
                    taxonomy=TAXONOMY,
                    targets=("capabilities",),
                    batch_size=4,
                    chunk_size=chunk,
                    progress=die,
                )
            sent_first = a.served["score"] + b.served["score"]
            a.reset_counters()
            b.reset_counters()
            r = score_source(
                store, "tabmwp", be, taxonomy=TAXONOMY, targets=("capabilities",), batch_size=4, chunk_size=chunk
            )
        finally:
            be.close()
    # the retry reused what was flushed before the death and computed the rest
    assert r.failed == 0 and r.scored + r.cached == pool.height
    assert 0 < r.computed < hashes
    assert r.cached > 0
    resent = a.served["score"] + b.served["score"]
    assert resent == r.computed * len(KEYS)
    # at most the unfinished chunk was computed twice
    assert sent_first + resent - hashes * len(KEYS) <= chunk * len(KEYS)
