"""The chunked score cache: atomic chunks, latest success wins, failures never count as done."""

from __future__ import annotations

import threading
import time

import polars as pl

from mmssr_core.scoring.base import ScorerIdentity
from mmssr_core.scoring.cache import ScoreCache, resolve, successes

IDENT = ScorerIdentity("rules", "rules-v1", "", "p1-x")
KEYS = lambda *h: pl.DataFrame({"content_hash": list(h)})  # noqa: E731
U = [1 / 6] * 6


def test_layout_and_identity_sidecar(store):
    cache = ScoreCache(store, IDENT)
    assert cache.chunks() == [] and cache.done(KEYS("a")).height == 0
    p = cache.append([{"content_hash": "a", "target": "stem", "dist": U}])
    assert p.parent == store.root / "score_cache" / IDENT.digest and p.suffix == ".parquet"
    assert (p.parent / "identity.json").read_text().count(IDENT.label()) == 1
    assert cache.append([]) is None and len(cache.chunks()) == 1
    # another identity sees nothing
    assert ScoreCache(store, ScorerIdentity("rules", "rules-v2")).done(KEYS("a")).height == 0


def test_latest_success_wins_and_failures_are_not_done(store):
    cache = ScoreCache(store, IDENT)
    cache.append(
        [
            {"content_hash": "a", "target": "stem", "dist": [1, 0, 0, 0, 0, 0]},
            {"content_hash": "b", "target": "stem", "reason": "timeout", "message": "slow"},
            {"content_hash": "c", "target": "styles", "labels": ["yes/no"]},
        ]
    )
    time.sleep(0.01)
    cache.append(
        [
            {"content_hash": "a", "target": "stem", "reason": "http_5xx", "message": "later failure"},
            {"content_hash": "b", "target": "stem", "reason": "malformed_answer", "message": "latest"},
            {"content_hash": "c", "target": "styles", "labels": ["multi-choice"]},
        ]
    )
    done = cache.done(KEYS("a", "b", "c"))
    assert sorted(map(tuple, done.rows())) == [("a", "stem"), ("c", "styles")]
    ok, bad = cache.results(KEYS("a", "b", "c"))
    okd = {(r["content_hash"], r["target"]): r for r in ok.iter_rows(named=True)}
    assert okd[("a", "stem")]["dist"] == [1, 0, 0, 0, 0, 0]  # a later failure never hides a success
    assert okd[("c", "styles")]["labels"] == ["multi-choice"]  # the latest success
    assert bad.rows() == [("b", "stem", "malformed_answer", "latest")]
    # targets and keys filter
    assert cache.done(KEYS("a", "c"), ["styles"]).rows() == [("c", "styles")]
    assert cache.done(KEYS("zzz")).height == 0


def test_temp_files_of_interrupted_writes_are_ignored(store):
    cache = ScoreCache(store, IDENT)
    cache.append([{"content_hash": "a", "target": "stem", "dist": U}])
    (cache.dir / ".deadbeef.parquet.123.tmp").write_bytes(b"PAR1 half a file")
    (cache.dir / ".half.parquet").write_bytes(b"garbage")
    assert len(cache.chunks()) == 1
    assert cache.done(KEYS("a")).height == 1


def test_compaction_keeps_results(store):
    cache = ScoreCache(store, IDENT)
    for i in range(5):
        cache.append(
            [
                {"content_hash": f"h{i}", "target": "stem", "dist": U},
                {"content_hash": "x", "target": "stem", "reason": "timeout", "message": str(i)},
            ]
        )
    before = cache.results(KEYS(*[f"h{i}" for i in range(5)], "x"))
    cache.compact()
    assert len(cache.chunks()) == 1
    after = cache.results(KEYS(*[f"h{i}" for i in range(5)], "x"))
    for b, a in zip(before, after):
        assert b.sort("content_hash").equals(a.sort("content_hash"))
    assert after[1]["message"].to_list() == ["4"]


def test_concurrent_appends(store):
    cache = ScoreCache(store, IDENT)

    def writer(t):
        for i in range(10):
            ScoreCache(store, IDENT).append([{"content_hash": f"{t}-{i}", "target": "stem", "dist": U}])

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(cache.chunks()) == 40
    assert successes(resolve(cache.lookup())).height == 40
