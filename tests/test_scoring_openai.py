"""The OpenAI-compatible backend against the local vLLM-shaped test server (127.0.0.1 only)."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from _scoring_pool import write_pool

from mmssr_core.prompts import DIGITS, IMAGE_TOKEN, PromptSet, parse_styles
from mmssr_core.scoring.base import Failure, ScoreRequest, get_backend
from mmssr_core.scoring.openai_backend import OpenAIBackend, styles_regex
from mmssr_core.scoring.runner import score_source
from mmssr_core.taxonomy import Taxonomy
from mmssr_core.testing.testserver import (
    FILLERS,
    TestServer,
    decode_data_url,
    intended_distribution,
    intended_styles,
    request_text,
)

PROMPTS = PromptSet.from_taxonomy(Taxonomy())
FAST = dict(backoff_base=0.01, backoff_max=0.05, circuit_cooldown=0.2)


def make_requests(shared_data, n=2, offset=0):
    import json

    recs = json.loads((shared_data / "tabmwp_dev1k/pool.llava.json").read_text())[offset : offset + n]
    out = []
    for r in recs:
        convs = tuple(r["conversations"])
        out.append(
            ScoreRequest(
                key=f"k-{r['id']}",
                sample_id=r["id"],
                prefix=PROMPTS.prefix(convs),
                image_file=str(shared_data / "tabmwp_dev1k" / r["image"]),
                conversations=convs,
            )
        )
    return out


def expected(req: ScoreRequest, query: str) -> np.ndarray:
    return intended_distribution(req.prefix + query)


@pytest.fixture
def server():
    with TestServer() as srv:
        yield srv


def backend_for(*servers, **kw) -> OpenAIBackend:
    opts = dict(FAST, concurrency=4, timeout=5)
    opts.update(kw)
    return OpenAIBackend(base_urls=[s.url for s in servers], **opts)


def test_scores_match_server_distribution_and_styles(server, shared_data):
    reqs = make_requests(shared_data, 2)
    b = backend_for(server)
    queries = list(PROMPTS.capability_queries[:4])
    dists = b.digit_distributions(reqs, queries, PROMPTS)
    for req, row in zip(reqs, dists):
        for q, d in zip(queries, row):
            assert isinstance(d, np.ndarray) and d.shape == (6,)
            assert abs(d.sum() - 1) < 1e-9
            np.testing.assert_allclose(d, expected(req, q), rtol=1e-9)
    styles = b.styles(reqs, PROMPTS)
    for req, s in zip(reqs, styles):
        assert s == intended_styles(req.prefix + PROMPTS.style_query, list(PROMPTS.styles))
    # vLLM extensions were sent: explicit digit ids (found via /tokenize), structured outputs regex
    bodies = [body for body, _ in server.recent]
    score_body = next(x for x in bodies if x["max_tokens"] == 1)
    assert score_body["logprob_token_ids"] == [15, 16, 17, 18, 19, 20]
    assert score_body["temperature"] == 0 and score_body["logprobs"] is True and score_body["top_logprobs"] == 20
    style_body = next(x for x in bodies if x["max_tokens"] > 1)
    assert style_body["structured_outputs"] == {"regex": styles_regex(PROMPTS.styles)}
    assert b.stats()["retries"] == 0
    b.close()


def test_images_are_data_urls_where_the_placeholder_was(server, shared_data):
    from PIL import Image

    reqs = make_requests(shared_data, 1)
    b = backend_for(server)
    b.digit_distributions(reqs, PROMPTS.capability_queries[:1], PROMPTS)
    body, _ = server.recent[-1]
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are a helpful assistant."}
    parts = user["content"]
    kinds = [p["type"] for p in parts]
    assert kinds == ["text", "image_url", "text"]
    before, after = reqs[0].prefix.split(IMAGE_TOKEN)
    assert parts[0]["text"] == before and parts[2]["text"] == after + PROMPTS.capability_queries[0]
    mime, data = decode_data_url(parts[1]["image_url"]["url"])
    assert mime == "image/png"
    img = Image.open(io.BytesIO(data))
    assert img.size == (384, 384) and img.mode == "RGB"
    b.close()


def test_text_only_sample_sends_no_image(server):
    convs = ({"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"})
    req = ScoreRequest("k", "t", PROMPTS.prefix(convs), None, convs)
    b = backend_for(server)
    [[d]] = b.digit_distributions([req], PROMPTS.capability_queries[:1], PROMPTS)
    np.testing.assert_allclose(d, expected(req, PROMPTS.capability_queries[0]))
    body, _ = server.recent[-1]
    assert [p["type"] for p in body["messages"][1]["content"]] == ["text"]
    b.close()


def test_top_logprobs_only_server_renormalises_over_present_digits(shared_data):
    """An older server ignores logprob_token_ids and returns only the top 3: absent digits get 0."""
    reqs = make_requests(shared_data, 1)
    q = PROMPTS.capability_queries[0]
    with TestServer(logprob_token_ids="ignore", top_k_cap=3, tokenize=False) as srv:
        b = backend_for(srv)
        [[d]] = b.digit_distributions(reqs, [q], PROMPTS)
        full = expected(reqs[0], q)
        # the server's vocabulary: 90% of the mass on the digits, the rest on filler tokens
        w = 0.5 ** np.arange(len(FILLERS))
        vocab = np.concatenate([0.9 * full, 0.1 * w / w.sum()])
        top3 = [i for i in np.argsort(-vocab)[:3] if i < 6]
        assert 0 < len(top3)
        want = np.zeros(6)
        want[top3] = full[top3] / full[top3].sum()
        np.testing.assert_allclose(d, want, rtol=1e-9)
        assert "logprob_token_ids" not in srv.recent[-1][0]  # no /tokenize: not sent
        b.close()


@pytest.mark.parametrize("fault", ["http_500", "http_502", "http_503", "http_429", "drop"])
def test_transient_faults_are_retried(server, shared_data, fault):
    reqs = make_requests(shared_data, 1)
    q = PROMPTS.capability_queries[:2]
    server.inject(fault, count=3)
    b = backend_for(server, concurrency=1)
    dists = b.digit_distributions(reqs, q, PROMPTS)
    for qq, d in zip(q, dists[0]):
        np.testing.assert_allclose(d, expected(reqs[0], qq))
    assert server.faults_served[fault] == 3
    assert b.stats()["failures"] == {}
    b.close()


def test_timeout_is_retried(shared_data):
    reqs = make_requests(shared_data, 1)
    q = PROMPTS.capability_queries[0]
    with TestServer(fault_delay=3.0) as srv:
        srv.inject("delay", count=1)
        b = backend_for(srv, timeout=0.3, concurrency=1)
        t0 = time.monotonic()
        [[d]] = b.digit_distributions(reqs, [q], PROMPTS)
        assert time.monotonic() - t0 < 2.5  # did not wait for the slow answer
        np.testing.assert_allclose(d, expected(reqs[0], q))
        assert b.stats()["retries"] >= 1
        b.close()


def test_persistent_errors_become_failures_with_reason(shared_data):
    reqs = make_requests(shared_data, 1)
    with TestServer(fault_delay=2.0) as srv:
        srv.inject("http_503", count=-1, when="score")
        b = backend_for(srv, max_retries=2, circuit_threshold=100)
        [[d]] = b.digit_distributions(reqs, PROMPTS.capability_queries[:1], PROMPTS)
        assert isinstance(d, Failure) and d.reason == "http_5xx" and "503" in d.message
        assert srv.faults_served["http_503"] == 3  # first try + 2 retries
        srv.clear_faults()
        srv.inject("delay", count=-1)
        b2 = backend_for(srv, max_retries=1, timeout=0.2, circuit_threshold=100)
        [[d]] = b2.digit_distributions(reqs, PROMPTS.capability_queries[:1], PROMPTS)
        assert isinstance(d, Failure) and d.reason == "timeout"
        srv.clear_faults()
        srv.inject("http_400", count=1)
        [[d]] = b.digit_distributions(reqs, PROMPTS.capability_queries[:1], PROMPTS)
        assert isinstance(d, Failure) and d.reason == "http_400"
        b.close(), b2.close()


@pytest.mark.parametrize("fault", ["non_json", "missing_fields", "no_digits"])
def test_malformed_answers_are_reasked_then_fail(server, shared_data, fault):
    reqs = make_requests(shared_data, 1)
    q = PROMPTS.capability_queries[0]
    b = backend_for(server, max_reasks=2)
    server.inject(fault, count=2)  # within the re-ask budget: succeeds
    [[d]] = b.digit_distributions(reqs, [q], PROMPTS)
    np.testing.assert_allclose(d, expected(reqs[0], q))
    assert b.stats()["reasks"] == 2
    server.inject(fault, count=3)  # beyond it: a recorded failure, never a zero
    [[d]] = b.digit_distributions(reqs, [q], PROMPTS)
    assert isinstance(d, Failure) and d.reason == "malformed_answer"
    assert "asked 3 times" in d.message
    b.close()


def test_bad_style_answer_is_reasked_then_fails(server, shared_data):
    reqs = make_requests(shared_data, 1)
    b = backend_for(server, max_reasks=1)
    server.inject("bad_style", count=1)
    [s] = b.styles(reqs, PROMPTS)
    assert s == intended_styles(reqs[0].prefix + PROMPTS.style_query, list(PROMPTS.styles))
    server.inject("bad_style", count=2)
    [s] = b.styles(reqs, PROMPTS)
    assert isinstance(s, Failure) and s.reason == "malformed_answer" and "banana" in s.message
    b.close()


def test_api_key_from_env_sent_as_bearer_never_shown(shared_data, monkeypatch):
    reqs = make_requests(shared_data, 1)
    secret = "sk-test-0123456789"
    with TestServer(api_key=secret) as srv:
        monkeypatch.setenv("MY_SCORER_KEY", secret)
        b = backend_for(srv, api_key_env="MY_SCORER_KEY")
        [[d]] = b.digit_distributions(reqs, PROMPTS.capability_queries[:1], PROMPTS)
        assert isinstance(d, np.ndarray)
        assert srv.recent[-1][1]["Authorization"] == f"Bearer {secret}"
        assert secret not in repr(b) and secret not in str(b.stats())
        b.close()
        monkeypatch.delenv("MY_SCORER_KEY")
        b2 = backend_for(srv, api_key_env="MY_SCORER_KEY")
        [[d]] = b2.digit_distributions(reqs, PROMPTS.capability_queries[:1], PROMPTS)
        assert isinstance(d, Failure) and d.reason == "http_401" and secret not in d.message
        assert "Authorization" not in srv.recent[-1][1]
        b2.close()


def test_explicit_api_key_wins_over_the_environment(shared_data, monkeypatch):
    """Dagster resolves an EnvVar and passes the key itself (api_key=...)."""
    reqs = make_requests(shared_data, 1)
    secret = "sk-explicit-42"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with TestServer(api_key=secret) as srv:
        b = backend_for(srv, api_key=secret)
        [[d]] = b.digit_distributions(reqs, PROMPTS.capability_queries[:1], PROMPTS)
        assert isinstance(d, np.ndarray)
        assert srv.recent[-1][1]["Authorization"] == f"Bearer {secret}"
        assert secret not in repr(b)
        b.close()


def test_strict_server_gets_requests_without_vllm_extensions(shared_data):
    """A server that rejects unknown parameters (HTTP 400 naming them): the backend drops them once."""
    reqs = make_requests(shared_data, 2)
    with TestServer(strict_params=True) as srv:
        b = backend_for(srv)
        q = PROMPTS.capability_queries[:2]
        dists = b.digit_distributions(reqs, q, PROMPTS)
        for req, row in zip(reqs, dists):
            for qq, d in zip(q, row):
                np.testing.assert_allclose(d, expected(req, qq))
        styles = b.styles(reqs, PROMPTS)
        assert all(isinstance(s, list) and s for s in styles)
        last = srv.recent[-1][0]
        assert "structured_outputs" not in last and "guided_regex" not in last and "logprob_token_ids" not in last
        b.close()


def test_model_name_from_server_and_identity(server):
    b = backend_for(server)
    ident = b.identity(PROMPTS)
    assert ident.model == "test-scorer" and ident.backend == "openai"
    # replicas are interchangeable: the URL is not part of the identity
    with TestServer() as other:
        assert backend_for(other, model="test-scorer").identity(PROMPTS).digest == ident.digest
    b.close()


def test_concurrency_is_bounded_per_replica(shared_data):
    reqs = make_requests(shared_data, 2)
    with TestServer(latency=0.05) as srv:
        b = backend_for(srv, concurrency=3)
        b.digit_distributions(reqs, PROMPTS.capability_queries, PROMPTS)
        assert 2 <= srv.max_in_flight <= 3  # concurrent, and never above the per-replica bound
        b.close()


def test_two_replicas_share_the_work(shared_data):
    reqs = make_requests(shared_data, 2)
    with TestServer(latency=0.01) as a, TestServer(latency=0.01) as b_srv:
        b = backend_for(a, b_srv)
        b.digit_distributions(reqs, PROMPTS.capability_queries, PROMPTS)
        served = [a.total_served, b_srv.total_served]
        assert sum(served) == 28 and min(served) >= 7
        stats = b.stats()["replicas"]
        # the client's per-replica counters also include the one-off /models and /tokenize calls
        assert all(r["served"] >= n for r, n in zip(stats, served))
        assert sum(r["served"] for r in stats) == 28 + 1 + 6
        b.close()


def test_dead_replica_leaves_rotation_and_comes_back(shared_data):
    reqs = make_requests(shared_data, 1)
    q = PROMPTS.capability_queries
    with TestServer() as a, TestServer() as b_srv:
        a.stop()
        b = backend_for(a, b_srv, circuit_threshold=2, circuit_cooldown=0.3)
        dists = b.digit_distributions(reqs, q, PROMPTS)
        assert all(isinstance(d, np.ndarray) for d in dists[0])
        st = b.stats()["replicas"]
        assert st[0]["failures"] >= 2 and st[0]["served"] == 0 and st[0]["trips"] >= 1
        assert b_srv.total_served == len(q)
        a.restart()
        time.sleep(0.7)
        b.digit_distributions(reqs, q, PROMPTS)
        assert a.total_served > 0  # probed back into rotation
        assert b.stats()["replicas"][0]["open"] is False
        b.close()


def test_all_replicas_down_fails_without_hanging(shared_data):
    reqs = make_requests(shared_data, 1)
    srv = TestServer().start()
    srv.stop()
    b = backend_for(srv, max_retries=3, model="test-scorer")
    t0 = time.monotonic()
    [[d]] = b.digit_distributions(reqs, PROMPTS.capability_queries[:1], PROMPTS)
    assert isinstance(d, Failure) and d.reason == "connection_error"
    assert time.monotonic() - t0 < 5
    b.close()


@pytest.mark.slow
def test_replica_killed_mid_run_still_finishes(store, shared_data):
    write_pool(store, "tab", shared_data, "tabmwp", 16)
    with TestServer(latency=0.01) as a, TestServer(latency=0.01) as b_srv:
        backend = get_backend("openai", base_urls=[a.url, b_srv.url], concurrency=4, **FAST)

        def killer():
            while a.total_served < 40:
                time.sleep(0.005)
            a.stop()

        t = threading.Thread(target=killer)
        t.start()
        res = score_source(store, "tab", backend, batch_size=4, chunk_size=8)
        t.join()
        assert res.failed == 0 and res.scored == 16
        assert a.total_served >= 40 and b_srv.total_served > 0
        caps = store.read("capability_scores", "tab")
        raw = store.read("raw_pool", "tab")
        assert caps.height == 16 and caps["stem_knowledge"].null_count() == 0
        # scores equal the servers' intended distributions whichever replica answered
        query = PROMPTS.capability_queries[PROMPTS.capability_keys.index("stem_knowledge")]
        for row, conv in zip(caps.iter_rows(named=True), raw["conversations"].to_list()):
            want = intended_distribution(PROMPTS.prefix(conv) + query)
            assert row["stem_knowledge"] == pytest.approx(float(np.dot(np.arange(6), want)))
            assert row["stem_knowledge__argmax"] == int(np.argmax(want))
        styles = store.read("style_labels", "tab")["styles"].to_list()
        assert all(s and set(s) <= set(PROMPTS.styles) for s in styles)
        backend.close()


def test_runner_records_malformed_failures(store, shared_data):
    write_pool(store, "tab", shared_data, "tabmwp", 3)
    with TestServer() as srv:
        target_phrase = "optical character recognition"
        srv.inject("no_digits", count=-1, when=lambda body: target_phrase in request_text(body["messages"]))
        backend = backend_for(srv, max_reasks=1)
        res = score_source(store, "tab", backend)
        assert res.failed == 3
        fails = store.read("score_failures", "tab")
        assert set(fails["target"]) == {"optical_character_recognition"}
        assert set(fails["reason"]) == {"malformed_answer"}
        caps = store.read("capability_scores", "tab")
        assert caps["optical_character_recognition"].null_count() == 3
        assert caps["stem_knowledge"].null_count() == 0
        srv.clear_faults()
        res2 = score_source(store, "tab", backend)
        assert res2.failed == 0 and res2.scored == 3
        backend.close()


def test_parse_digits_handles_spacing_and_token_ids():
    b = OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m", logprob_token_ids=[15, 16, 17, 18, 19, 20])
    res = {
        "choices": [
            {
                "logprobs": {
                    "content": [
                        {
                            "token": " 3",
                            "logprob": np.log(0.5),
                            "top_logprobs": [
                                {"token": " 3", "logprob": np.log(0.5)},
                                {"token": "token_id:16", "logprob": np.log(0.25)},
                                {"token": "3", "logprob": np.log(0.25)},
                                {"token": "x", "logprob": np.log(0.1)},
                            ],
                        }
                    ]
                }
            }
        ]
    }
    d = b.parse_digits(res)
    np.testing.assert_allclose(d, [0, 0.25, 0, 0.75, 0, 0])
    assert isinstance(b.parse_digits({"choices": [{}]}), str)
    b.close()


def test_styles_regex_accepts_label_lists_only():
    import re

    rx = styles_regex(PROMPTS.styles)
    assert re.fullmatch(rx, "multi-choice, chain-of-thought (step-by-step)")
    assert re.fullmatch(rx, "yes/no")
    assert not re.fullmatch(rx, "yes/no, ")
    assert not re.fullmatch(rx, "maybe")
    assert parse_styles("multi-choice, yes/no", PROMPTS.styles) == ["multi-choice", "yes/no"]
    assert len(DIGITS) == 6
