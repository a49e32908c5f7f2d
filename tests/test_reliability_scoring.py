"""Scoring against hostile servers and slow backends: secrets never stored, hard HTTP limits, work
flushed by time, and a scores table that only holds ids of the current pool."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest
from _scoring_pool import pool_frame

from mmssr_core.prompts import PromptSet
from mmssr_core.scoring.base import Failure, ScoreRequest
from mmssr_core.scoring.cache import ScoreCache
from mmssr_core.scoring.openai_backend import OpenAIBackend
from mmssr_core.scoring.rules import RulesBackend
from mmssr_core.scoring.runner import build_scores, score_source
from mmssr_core.taxonomy import Taxonomy
from mmssr_core.testing.hostile_server import HostileServer

KEY = "sk-live-0123456789abcdefSECRET"
FAST = dict(backoff_base=0.01, backoff_max=0.02, max_retries=0, concurrency=2)


def _text_pool(store, source: str, n: int, tag: str = "") -> None:
    recs = [
        {
            "id": f"s{i}",
            "conversations": [
                {"from": "human", "value": f"Question {i}{tag}: what is {i}+1?"},
                {"from": "gpt", "value": f"{i + 1}"},
            ],
        }
        for i in range(n)
    ]
    store.write("raw_pool", source, pool_frame(source, recs, store.root))


def _all_bytes(root) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def _req(text: str = "Question: hi Answer: yes\n") -> ScoreRequest:
    return ScoreRequest(key="k", sample_id="s", prefix=text, image_file=None, conversations=())


# -- secrets -----------------------------------------------------------------------------------
def test_an_echoing_server_never_gets_the_key_into_the_store_or_logs(store, caplog):
    _text_pool(store, "echo", 3)
    caplog.set_level(logging.DEBUG)
    with HostileServer("echo_auth") as srv:
        backend = OpenAIBackend(model="m", base_url=srv.url, api_key=KEY, **FAST)
        result = score_source(store, "echo", backend)
        backend.close()
    assert result.failed == 3
    fails = store.read("score_failures", "echo")
    assert (fails["reason"] == "http_401").all()
    assert all("[REDACTED]" in m for m in fails["message"])  # the message still says what happened
    assert KEY.encode() not in _all_bytes(store.root)
    assert KEY not in caplog.text and KEY not in repr(backend)


def test_credentials_in_a_base_url_are_used_but_never_shown(store):
    _text_pool(store, "url", 1)
    with HostileServer("echo_auth") as srv:
        url = srv.url.replace("http://", "http://alice:hunter2pass@")
        backend = OpenAIBackend(model="m", base_url=url, api_key_env="", **FAST)
        score_source(store, "url", backend)
        assert "hunter2pass" not in repr(backend) and "hunter2pass" not in json.dumps(backend.stats())
        backend.close()
    data = _all_bytes(store.root)
    assert b"hunter2pass" not in data and b"YWxpY2U6aHVudGVyMnBhc3M" not in data  # nor its base64


def test_teacher_failures_are_redacted_too(store, monkeypatch):
    from mmssr_core.teacher import TeacherClient, label_sources

    _text_pool(store, "t", 4)
    monkeypatch.setenv("K_TEST", KEY)
    with HostileServer("echo_auth") as srv:
        client = TeacherClient.from_urls([srv.url], Taxonomy(), model="m", api_key_env="K_TEST", max_retries=0)
        res = label_sources(store, ["t"], 4, client)
        client.close()
    assert res.failed == 4
    assert KEY.encode() not in _all_bytes(store.root)


# -- HTTP limits -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["drip_body", "drip_headers"])
def test_a_dripping_server_hits_the_whole_request_deadline(mode):
    with HostileServer(mode, interval=0.2, max_seconds=15) as srv:
        backend = OpenAIBackend(model="m", base_url=srv.url, timeout=1.0, **FAST)
        t0 = time.monotonic()
        out = backend.digit_distributions([_req()], ["q"], PromptSet.from_taxonomy(Taxonomy()))[0][0]
        took = time.monotonic() - t0
        backend.close()
    assert isinstance(out, Failure) and out.reason == "timeout", out
    assert took < 4, f"took {took:.1f}s for a 1s deadline"


@pytest.mark.parametrize("mode", ["huge", "huge_chunked"])
def test_a_huge_answer_is_refused_at_the_body_cap(mode):
    with HostileServer(mode, max_seconds=15) as srv:
        backend = OpenAIBackend(model="m", base_url=srv.url, timeout=30, max_body_bytes=1 << 20, **FAST)
        t0 = time.monotonic()
        out = backend.digit_distributions([_req()], ["q"], PromptSet.from_taxonomy(Taxonomy()))[0][0]
        took = time.monotonic() - t0
        backend.close()
        time.sleep(0.2)
        sent = srv.bytes_sent
    assert isinstance(out, Failure) and out.reason == "response_too_large", out
    assert took < 10 and sent < 64 * 1024 * 1024, (took, sent)  # it stopped reading, it did not drain 300 MB


def test_overflowing_logprobs_are_a_reasoned_failure():
    with HostileServer("overflow_logprobs") as srv:
        backend = OpenAIBackend(model="m", base_url=srv.url, logprob_token_ids=False, **FAST)
        out = backend.digit_distributions([_req()], ["q"], PromptSet.from_taxonomy(Taxonomy()))[0][0]
        backend.close()
    assert isinstance(out, Failure) and out.reason == "malformed_answer"
    assert "not a log-probability" in out.message


# -- flushing by time --------------------------------------------------------------------------
SLOW_SCRIPT = """
import sys, time
from mmssr_core.store import Store
from mmssr_core.scoring.rules import RulesBackend
from mmssr_core.scoring.runner import score_source

class Slow(RulesBackend):
    def digit_distributions(self, requests, queries, prompts):
        time.sleep(0.15 * len(requests))
        return super().digit_distributions(requests, queries, prompts)

print("start", flush=True)
score_source(Store(sys.argv[1]), "slow", Slow(), batch_size=1)
"""


def test_a_killed_slow_run_keeps_what_it_scored_seconds_ago(store, tmp_path):
    _text_pool(store, "slow", 40)
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    env = dict(os.environ, MMSSR_FLUSH_SECONDS="0.5")
    proc = subprocess.Popen([sys.executable, str(script), str(store.root)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"start"
    time.sleep(3.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not store.exists("capability_scores", "slow")  # killed mid-run
    sent = []

    class Counting(RulesBackend):
        def digit_distributions(self, requests, queries, prompts):
            sent.extend(r.sample_id for r in requests)
            return super().digit_distributions(requests, queries, prompts)

    res = score_source(store, "slow", Counting())
    assert res.failed == 0 and res.total == 40
    assert res.computed <= 40 - 8, f"the rerun re-sent {res.computed} of 40 samples"
    assert len(sent) == res.computed


def test_a_batch_slower_than_the_interval_shrinks_the_next_batches(store):
    _text_pool(store, "shrink", 20)
    sizes = []

    class Sluggish(RulesBackend):
        def digit_distributions(self, requests, queries, prompts):
            sizes.append(len(requests))
            time.sleep(0.25)
            return super().digit_distributions(requests, queries, prompts)

    score_source(store, "shrink", Sluggish(), batch_size=8, targets=("capabilities",), flush_seconds=0.1)
    assert sizes[0] == 8 and sizes[-1] == 1 and sizes == sorted(sizes, reverse=True)
    assert len(ScoreCache(store, Sluggish().identity(PromptSet.from_taxonomy(Taxonomy()))).chunks()) >= len(sizes) - 1


# -- no stale scores downstream ----------------------------------------------------------------
def test_the_scores_table_follows_the_current_pool(store, tmp_path):
    from mmssr_core.cli import main

    _text_pool(store, "p", 5)
    score_source(store, "p", RulesBackend())
    # re-ingest: s4 is gone, s3 changed its content, s5 is new
    recs = [
        {
            "id": f"s{i}",
            "conversations": [
                {"from": "human", "value": f"Question {i}: what is {i}+1?"},
                {"from": "gpt", "value": f"{i + 1}"},
            ],
        }
        for i in (0, 1, 2, 5)
    ]
    recs.insert(
        3,
        {
            "id": "s3",
            "conversations": [{"from": "human", "value": "A new question?"}, {"from": "gpt", "value": "A new answer."}],
        },
    )
    store.write("raw_pool", "p", pool_frame("p", recs, store.root))
    built = build_scores(store)
    assert built.table["id"].to_list() == ["s0", "s1", "s2", "s3", "s5"]
    assert built.stale == {"p": 2} and built.missing_scores == {"p": 2}
    keys = Taxonomy().keys
    nulls = built.table.filter(pl.col(keys[0]).is_null())["id"].to_list()
    assert nulls == ["s3", "s5"]
    out = tmp_path / "scores.parquet"
    assert main(["scores", "--store", str(store.root), "--out", str(out), "--json"]) == 0
    assert set(pl.read_parquet(out)["id"]) == {"s0", "s1", "s2", "s3", "s5"}


def test_the_scores_command_reports_stale_and_missing(store, tmp_path, capsys):
    from mmssr_core.cli import main

    _text_pool(store, "p", 4)
    score_source(store, "p", RulesBackend())
    _text_pool(store, "p", 2, tag=" (changed)")
    assert main(["scores", "--store", str(store.root), "--out", str(tmp_path / "s.parquet"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["rows"], summary["stale_dropped"], summary["missing_scores"], summary["incomplete"]) == (2, 4, 2, 2)


def test_a_run_that_scored_an_old_pool_never_overwrites_a_newer_one(store):
    from mmssr_core.store import StoreError

    _text_pool(store, "race", 3)

    class ReingestMeanwhile(RulesBackend):
        def digit_distributions(self, requests, queries, prompts):
            _text_pool(store, "race", 2, tag=" (re-ingested)")  # another process commits a new pool
            return super().digit_distributions(requests, queries, prompts)

    with pytest.raises(StoreError, match="changed while it was being scored"):
        score_source(store, "race", ReingestMeanwhile())
    assert not store.exists("capability_scores", "race")
    res = score_source(store, "race", RulesBackend())
    assert res.total == 2 and res.failed == 0
