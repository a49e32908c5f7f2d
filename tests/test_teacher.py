"""Teacher labelling: validation, stratified sampling, the structured request against a local test server
(malformed JSON, out-of-range scores, unknown styles, partial answers, no response_format support,
transport faults), the label store, the cache and resume after a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import polars as pl
import pytest
from _scoring_pool import write_pool

from mmssr_core.taxonomy import Taxonomy
from mmssr_core.teacher import (
    TEACHER_CACHE_TABLE,
    TEACHER_TABLE,
    TeacherAnswer,
    TeacherCache,
    TeacherClient,
    TeacherFailure,
    TeacherRequest,
    allocate,
    answer_schema,
    label_sources,
    plan_sample,
    stratified_sample,
    teacher_instruction,
    validate_answer,
)
from mmssr_core.testing.teacher_testserver import TeacherTestServer, instance_text, intended_answer

TAX = Taxonomy()
KEYS = TAX.keys


def _answer(**over):
    a = {"scores": {k: i % 6 for i, k in enumerate(KEYS)}, "styles": ["multi-choice", "short description"]}
    a.update(over)
    return a


# -- validation --------------------------------------------------------------------------------
def test_validate_accepts_good_answers_in_several_shapes():
    good = _answer()
    for text in (
        json.dumps(good),
        "```json\n" + json.dumps(good) + "\n```",
        "Here you go: " + json.dumps(good) + " done",
        json.dumps({**good["scores"], "styles": good["styles"]}),  # flat
        json.dumps(
            {"scores": {k: float(v) for k, v in good["scores"].items()}, "styles": "multi-choice, short description"}
        ),
        json.dumps({"scores": good["scores"], "styles": ["Multi-Choice", "short description", "multi-choice"]}),
    ):
        out = validate_answer(text, TAX)
        assert isinstance(out, TeacherAnswer), (text, out)
        assert out.scores == good["scores"]
        assert out.styles == ["multi-choice", "short description"]


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty_answer"),
        (None, "empty_answer"),
        ('{"scores": {"a": 1', "malformed_json"),
        ("[1, 2, 3]", "malformed_json"),
        ("not json at all", "malformed_json"),
        (json.dumps({"scores": {k: 1 for k in KEYS[:-1]}, "styles": ["yes/no"]}), "partial_answer"),
        (json.dumps({"scores": {k: 1 for k in KEYS}}), "partial_answer"),
        (json.dumps({"scores": {k: 1 for k in KEYS}, "styles": []}), "partial_answer"),
        (json.dumps({"scores": {**{k: 1 for k in KEYS}, KEYS[0]: None}, "styles": ["yes/no"]}), "partial_answer"),
        (json.dumps({"scores": {**{k: 1 for k in KEYS}, KEYS[3]: 6}, "styles": ["yes/no"]}), "out_of_range"),
        (json.dumps({"scores": {**{k: 1 for k in KEYS}, KEYS[3]: -1}, "styles": ["yes/no"]}), "out_of_range"),
        (json.dumps({"scores": {**{k: 1 for k in KEYS}, KEYS[3]: 2.5}, "styles": ["yes/no"]}), "out_of_range"),
        (json.dumps({"scores": {**{k: 1 for k in KEYS}, KEYS[3]: "high"}, "styles": ["yes/no"]}), "out_of_range"),
        (json.dumps({"scores": {**{k: 1 for k in KEYS}, KEYS[3]: True}, "styles": ["yes/no"]}), "out_of_range"),
        (json.dumps({"scores": {k: 1 for k in KEYS}, "styles": ["yes/no", "poem"]}), "unknown_style"),
        (json.dumps({"scores": {k: 1 for k in KEYS}, "styles": [3]}), "unknown_style"),
    ],
)
def test_validate_rejects_with_reason(text, reason):
    out = validate_answer(text, TAX)
    assert isinstance(out, TeacherFailure)
    assert out.reason == reason, out


def test_schema_and_instruction_name_every_key_and_label():
    s = answer_schema(TAX)
    assert s["properties"]["scores"]["required"] == KEYS
    assert s["properties"]["styles"]["items"]["enum"] == list(TAX.styles)
    text = teacher_instruction(
        TAX, [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}], True
    )
    for c in TAX.capabilities:
        assert f"- {c.key}: {c.phrase}" in text
    assert ", ".join(TAX.styles) in text
    assert "<image>" not in text and text.endswith("Question: What? Answer: A cat.")


# -- sampling ----------------------------------------------------------------------------------
def test_allocate_one_each_then_proportional():
    counts = {"a": 100, "b": 10, "c": 1, "d": 1}
    q = allocate(counts, 20, seed=0)
    assert sum(q.values()) == 20
    assert all(q[s] >= 1 for s in counts)
    assert q["a"] > q["b"] > 0 and q["c"] == q["d"] == 1
    assert all(q[s] <= counts[s] for s in counts)
    # fewer than strata: the largest strata get one each
    q = allocate(counts, 2, seed=0)
    assert q == {"a": 1, "b": 1, "c": 0, "d": 0}
    # more than the pool: everything
    assert allocate(counts, 1000) == counts
    # proportional: 20 * 100/110 = 18.2, 20 * 10/110 = 1.8 -> largest remainder
    assert allocate({"a": 100, "b": 10}, 20) == {"a": 18, "b": 2}
    # forced ones overshoot: taken back from the stratum most above its share
    q = allocate({"a": 10, "b": 1, "c": 1, "d": 1}, 4)
    assert q == {"a": 1, "b": 1, "c": 1, "d": 1}


def test_stratified_sample_is_seeded_and_nested():
    frame = pl.DataFrame(
        {
            "content_hash": [f"h{i}" for i in range(300)],
            "stratum": ["x"] * 200 + ["y"] * 90 + ["z"] * 10,
        }
    )
    a = stratified_sample(frame, 30, seed=1)
    b = stratified_sample(frame, 30, seed=1)
    c = stratified_sample(frame, 30, seed=2)
    assert a.equals(b) and not a.equals(c)
    assert a.height == 30 and a["content_hash"].n_unique() == 30
    got = dict(a.group_by("stratum").len().iter_rows())
    assert got == {"x": 20, "y": 9, "z": 1}
    bigger = stratified_sample(frame, 60, seed=1)
    assert set(a["content_hash"]) <= set(bigger["content_hash"])


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def pool_store(store, shared_data):
    write_pool(store, "llava_bench", shared_data, "llava_bench", n=30)
    write_pool(store, "mathv", shared_data, "mathv", n=40)
    return store


@pytest.fixture
def server():
    with TeacherTestServer() as srv:
        yield srv


def _client(srv, **kw) -> TeacherClient:
    kw.setdefault("max_attempts", 3)
    opts = {k: kw.pop(k) for k in ("concurrency", "timeout", "max_retries", "api_key_env") if k in kw}
    opts.setdefault("max_retries", 2)
    return TeacherClient.from_urls([srv.url], kw.pop("taxonomy", TAX), model=srv.model, **opts, **kw)


def _expected(store, source, sample_id, tax=TAX):
    """What the server means for a sample: rebuilt from the pool row the same way the client sends it."""
    row = store.read("raw_pool", source).filter(pl.col("id") == sample_id).row(0, named=True)
    text = teacher_instruction(tax, row["conversations"], bool(row["image_files"]))
    return intended_answer(text.partition("The instance:\n")[2], tax.keys, list(tax.styles))


# -- labelling against the server -------------------------------------------------------------
def test_label_writes_valid_labels_for_a_stratified_sample(pool_store, server):
    client = _client(server)
    try:
        res = label_sources(pool_store, ["llava_bench", "mathv"], 16, client, seed=3)
    finally:
        client.close()
    assert res.sampled == 16 and res.failed == 0 and res.labelled == 16 and res.cached == 0
    plan = plan_sample(pool_store, ["llava_bench", "mathv"], 16, 3, TAX)
    assert res.strata == dict(sorted(Counter(plan["stratum"].to_list()).items()))
    assert {s.split("+")[0] for s in res.strata} == {"llava_bench", "mathv"}
    n_strata = plan_sample(pool_store, ["llava_bench", "mathv"], 10_000, 3, TAX)["stratum"].n_unique()
    assert len(res.strata) == min(16, n_strata)  # one per stratum when the size allows
    labels = pl.concat([pool_store.read(TEACHER_TABLE, s) for s in ("llava_bench", "mathv")])
    assert labels.height == 16
    for k in KEYS:
        assert labels.schema[k] == pl.Int8
    assert labels.schema["styles"] == pl.List(pl.Utf8)
    assert labels["failure"].null_count() == 16
    assert labels["teacher"].unique().to_list() == [f"test-teacher@127.0.0.1/{res.prompt_version}"]
    for row in labels.iter_rows(named=True):
        want = _expected(pool_store, row["source"], row["id"])
        assert {k: row[k] for k in KEYS} == want["scores"]
        assert row["styles"] == want["styles"]
    # the request: structured output schema with every key, the image as a data URL, system prompt
    body = server.teacher_requests()[0]
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"]["properties"]["scores"]["required"] == KEYS
    parts = body["messages"][1]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert body["temperature"] == 0.0


def test_invalid_answers_are_reasked_then_recorded(pool_store, server):
    rows = pool_store.read("raw_pool", "mathv").head(8)
    # pick four samples: three get one bad answer (then a good one), the fourth always a bad one
    texts = {
        r["id"]: teacher_instruction(TAX, r["conversations"], True).partition("The instance:\n")[2]
        for r in rows.iter_rows(named=True)
    }
    ids = list(texts)

    def only(sample_id):
        return lambda body: instance_text(body["messages"]) == texts[sample_id]

    server.inject("malformed_json", count=1, when=only(ids[0]))
    server.inject("out_of_range", count=1, when=only(ids[1]))
    server.inject("unknown_style", count=1, when=only(ids[2]))
    server.inject("partial_answer", count=-1, when=only(ids[3]))
    server.inject("fenced_json", count=-1, when=only(ids[4]))
    client = _client(server, max_attempts=3)
    try:
        res = label_sources(pool_store, ["mathv"], 40, client)
    finally:
        client.close()
    table = pool_store.read(TEACHER_TABLE, "mathv")
    by_id = {r["id"]: r for r in table.iter_rows(named=True)}
    for sid in ids[:3] + [ids[4]]:
        assert by_id[sid]["failure"] is None
        assert by_id[sid]["styles"] == _expected(pool_store, "mathv", sid)["styles"]
    bad = by_id[ids[3]]
    assert bad["failure"] == "partial_answer" and "asked 3 times" in bad["failure_message"]
    assert ids[3] in bad["failure_message"]
    assert all(bad[k] is None for k in KEYS) and bad["styles"] is None
    assert res.failed == 1 and res.failures_by_reason == {"partial_answer": 1}
    assert server.faults_served == Counter(
        malformed_json=1, out_of_range=1, unknown_style=1, partial_answer=3, fenced_json=1
    )
    # a re-ask carries the bad answer and the reason
    reasks = [b for b in server.teacher_requests() if len(b["messages"]) == 4]
    assert len(reasks) >= 5
    assert any("out_of_range" in b["messages"][3]["content"] for b in reasks)
    assert any(b["messages"][2]["role"] == "assistant" and '"banana"' in b["messages"][2]["content"] for b in reasks)

    # the invalid answer is the teacher's answer: not asked again, unless asked to
    server.reset_counters()
    server.clear_faults()
    client = _client(server)
    try:
        res2 = label_sources(pool_store, ["mathv"], 40, client)
        assert server.requests == 0 and res2.failed == 1 and res2.cached == 39
        res3 = label_sources(pool_store, ["mathv"], 40, client, retry_failures=True)
    finally:
        client.close()
    assert server.requests == 1 and res3.failed == 0 and res3.labelled == 1
    assert pool_store.read(TEACHER_TABLE, "mathv")["failure"].null_count() == 40


def test_server_without_response_format_falls_back(pool_store):
    for mode, want in (("reject", None), ("json_object_only", "json_object")):
        with TeacherTestServer(json_schema=mode) as srv:
            client = _client(srv)
            try:
                res = label_sources(pool_store, ["llava_bench"], 5, client)
            finally:
                client.close()
            assert res.failed == 0 and res.labelled + res.cached == 5
            last = srv.teacher_requests()[-1]
            assert (last.get("response_format") or {}).get("type") == want
            assert client.stats["downgrades"] == (2 if mode == "reject" else 1)
        pool_store.delete(TEACHER_TABLE, "llava_bench")
        import shutil

        shutil.rmtree(pool_store.table_dir(TEACHER_CACHE_TABLE))


def test_strict_mode_does_not_downgrade(pool_store):
    with TeacherTestServer(json_schema="reject") as srv:
        client = _client(srv, structured="json_schema")
        try:
            res = label_sources(pool_store, ["llava_bench"], 3, client)
        finally:
            client.close()
    assert res.failed == 3 and res.failures_by_reason == {"http_400": 3}


def test_transport_faults_retry_and_failures_are_retried_next_run(pool_store, server):
    server.inject("http_503", count=2)
    server.inject("http_400", count=1, when=lambda b: True)
    client = _client(server, max_retries=3)
    client.backend.backoff_base = 0.01
    try:
        res = label_sources(pool_store, ["llava_bench"], 6, client, seed=1)
    finally:
        client.close()
    assert res.failures_by_reason.get("http_400") == 1 and res.failed == 1
    assert server.faults_served["http_503"] == 2
    server.reset_counters()
    client = _client(server)
    try:
        res2 = label_sources(pool_store, ["llava_bench"], 6, client, seed=1)
    finally:
        client.close()
    assert server.requests == 1 and res2.failed == 0 and res2.cached == 5


def test_api_key_from_env_is_sent_and_never_printed(pool_store, monkeypatch, capsys):
    from mmssr_core.cli import main

    monkeypatch.setenv("MY_TEACHER_KEY", "sk-very-secret-123")
    with TeacherTestServer(api_key="sk-very-secret-123") as srv:
        rc = main(
            [
                "label",
                "--store",
                str(pool_store.root),
                "--source",
                "mathv",
                "--size",
                "4",
                "--base-url",
                srv.url,
                "--model",
                srv.model,
                "--api-key-env",
                "MY_TEACHER_KEY",
                "--json",
            ]
        )
        out = capsys.readouterr()
        assert rc == 0
        summary = json.loads(out.out.strip().splitlines()[-1])
        assert summary["sampled"] == 4 and summary["failed"] == 0
        assert "sk-very-secret" not in out.out + out.err
        # a wrong key: every sample fails with http_401, recorded, not a crash
        monkeypatch.setenv("MY_TEACHER_KEY", "wrong")
        rc = main(
            [
                "label",
                "--store",
                str(pool_store.root),
                "--source",
                "mathv",
                "--size",
                "6",
                "--base-url",
                srv.url,
                "--model",
                srv.model,
                "--api-key-env",
                "MY_TEACHER_KEY",
                "--json",
            ]
        )
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert rc == 0 and summary["failures_by_reason"] == {"http_401": 2} and summary["cached"] == 4


def test_cli_errors_are_one_line(pool_store, capsys):
    from mmssr_core.cli import main

    assert (
        main(
            [
                "label",
                "--store",
                str(pool_store.root),
                "--source",
                "nope",
                "--size",
                "3",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--model",
                "m",
            ]
        )
        == 2
    )
    assert "not ingested" in capsys.readouterr().err
    assert main(["label", "--store", str(pool_store.root), "--size", "0", "--base-url", "http://127.0.0.1:9/v1"]) == 2


def test_cache_is_keyed_by_teacher_identity(pool_store, server):
    client = _client(server)
    try:
        label_sources(pool_store, ["mathv"], 5, client)
        ident = client.identity()
    finally:
        client.close()
    assert TeacherCache(pool_store, ident).resolved().height == 5
    other = Taxonomy(TAX.capabilities[:3], TAX.styles)  # another prompt version: a fresh cache
    server.reset_counters()
    client = _client(server, taxonomy=other)
    try:
        assert client.identity().digest != ident.digest
        res = label_sources(pool_store, ["mathv"], 5, client)
    finally:
        client.close()
    assert res.cached == 0 and server.requests == 5
    assert pool_store.read(TEACHER_TABLE, "mathv").columns[3:6] == KEYS[:3]


@pytest.mark.slow
def test_killed_run_resumes(pool_store, tmp_path):
    """SIGKILL a labelling run after some chunks are flushed; the rerun asks only for what is missing."""
    with TeacherTestServer(latency=0.05) as srv:
        cmd = [
            sys.executable,
            "-m",
            "mmssr_core.cli",
            "label",
            "--store",
            str(pool_store.root),
            "--source",
            "mathv",
            "--size",
            "40",
            "--base-url",
            srv.url,
            "--model",
            srv.model,
            "--concurrency",
            "1",
            "--chunk-size",
            "4",
            "--json",
            "--no-progress",
        ]
        env = dict(os.environ, PYTHONPATH=str(os.getcwd()))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        cache_dir = pool_store.table_dir(TEACHER_CACHE_TABLE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            chunks = list(cache_dir.glob("*/*.parquet")) if cache_dir.exists() else []
            if len(chunks) >= 2:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not pool_store.exists(TEACHER_TABLE, "mathv")
        done_before = sum(pl.read_parquet(p).height for p in cache_dir.glob("*/*.parquet"))
        assert 8 <= done_before < 40
        asked_before = srv.requests
        srv.reset_counters()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["sampled"] == 40 and summary["failed"] == 0
        assert summary["cached"] == done_before and summary["labelled"] == 40 - done_before
        assert srv.requests == 40 - done_before
        assert asked_before >= done_before
    table = pool_store.read(TEACHER_TABLE, "mathv")
    assert table.height == 40 and table["failure"].null_count() == 40


def test_teacher_server_still_answers_scoring_requests_on_kept_alive_connections():
    import numpy as np

    from mmssr_core.prompts import PromptSet
    from mmssr_core.scoring.base import ScoreRequest
    from mmssr_core.scoring.openai_backend import OpenAIBackend

    prompts = PromptSet.from_taxonomy(TAX)
    convs = ({"from": "human", "value": "What is 2 + 2?"}, {"from": "gpt", "value": "4"})
    req = ScoreRequest(key="k", sample_id="s", prefix=prompts.prefix(convs), image_file=None, conversations=convs)
    with TeacherTestServer() as srv:
        backend = OpenAIBackend(base_url=srv.url, model=srv.model, max_retries=0, concurrency=1)
        client = TeacherClient(backend, TAX, max_attempts=1)
        try:
            for _ in range(3):  # score, teacher, score... over the same kept-alive connection
                dists = backend.digit_distributions([req], list(prompts.capability_queries[:2]), prompts)
                assert all(isinstance(d, np.ndarray) and abs(d.sum() - 1) < 1e-9 for d in dists[0])
                out, asks = client.label(TeacherRequest("h", "s", "src", convs, None))
                assert isinstance(out, TeacherAnswer) and asks == 1
        finally:
            backend.close()
        assert srv.served["score"] == 6 and srv.served["teacher"] == 3
