"""The transformers backend on tiny random LLaVA-OneVision checkpoints loaded through from_pretrained(dir).

Properties, not values: distributions sum to one; batching, the shared-prefix KV reuse and the plain path
agree; the digit argmax is what greedy `generate` produces; styles come from the label set; one bad image
fails one sample only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mmssr_core.prompts import DIGITS, PromptSet  # noqa: E402
from mmssr_core.scoring.base import Failure, ScoreRequest, get_backend  # noqa: E402
from mmssr_core.scoring.transformers_backend import StyleConstraint, TransformersBackend  # noqa: E402
from mmssr_core.taxonomy import Taxonomy  # noqa: E402
from mmssr_core.testing.tiny_models import build_tiny_llava_onevision  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_llava_onevision(tmp_path_factory.mktemp("tiny") / "tiny-llava-ov", seed=0)


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    return build_tiny_llava_onevision(tmp_path_factory.mktemp("tinyd") / "tiny-digits", seed=1, digits_dominate=True)


@pytest.fixture(scope="module")
def prompts():
    return PromptSet.from_taxonomy(Taxonomy())


@pytest.fixture(scope="module")
def requests_(shared_data, prompts):
    out = []
    for source, n in (("math_vision_testmini", 2), ("tabmwp_dev1k", 1), ("llava_bench", 1)):
        root = shared_data / source
        pool = json.loads((root / "pool.llava.json").read_text())[:n]
        for s in pool:
            out.append(
                ScoreRequest(
                    key=f"{source}/{s['id']}",
                    sample_id=s["id"],
                    prefix=prompts.prefix(s["conversations"]),
                    image_file=str(root / s["image"]),
                )
            )
    text_only = [{"from": "human", "value": "What is 17 + 25?"}, {"from": "gpt", "value": "42"}]
    out.append(ScoreRequest(key="text", sample_id="text-only", prefix=prompts.prefix(text_only), image_file=None))
    return out


QUERIES_SUBSET = slice(0, 5)


def _close(a, b, atol=1e-5):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for x, y in zip(ra, rb):
            assert not isinstance(x, Failure) and not isinstance(y, Failure)
            np.testing.assert_allclose(x, y, atol=atol)


def test_distributions_sum_to_one_through_from_pretrained(tiny, requests_, prompts):
    backend = get_backend("transformers", model=str(tiny), batch_size=4)
    out = backend.digit_distributions(requests_, prompts.capability_queries, prompts)
    assert len(out) == len(requests_)
    for row in out:
        assert len(row) == len(prompts.capability_queries)
        for dist in row:
            assert isinstance(dist, np.ndarray) and dist.shape == (len(DIGITS),)
            assert np.all(dist >= 0) and abs(dist.sum() - 1.0) < 1e-9
    # Different queries of one sample give different distributions (the query is really read).
    assert not np.allclose(out[0][0], out[0][1])
    assert backend.stats["prefills"] == len(requests_)  # one prefill per sample, not per query
    assert backend.stats["suffix_rows"] == len(requests_) * len(prompts.capability_queries)
    ident = backend.identity(prompts)
    assert ident.backend == "transformers" and ident.model == "tiny-llava-ov"
    assert ident.revision and dict(ident.extra)["dtype"] == "float32"
    assert ident.prompt_version == prompts.version


def test_batched_equals_one_by_one(tiny, requests_, prompts):
    queries = prompts.capability_queries[QUERIES_SUBSET]
    batched = TransformersBackend(str(tiny), batch_size=8, prefill_batch_size=8).digit_distributions(
        requests_, queries, prompts
    )
    single = TransformersBackend(str(tiny), batch_size=1, suffix_batch=1)
    one_by_one = [single.digit_distributions([r], queries, prompts)[0] for r in requests_]
    _close(batched, one_by_one)


@pytest.mark.parametrize(
    "variant",
    [
        {},  # packed query tails (4D mask), sdpa
        {"pack_queries": False, "suffix_batch": 7},  # one row per query against a copied prefix cache
        {"attn_implementation": "eager"},  # packed with an additive float mask
    ],
)
def test_shared_prefix_equals_plain_path(tiny, requests_, prompts, variant):
    queries = prompts.capability_queries[QUERIES_SUBSET]
    shared = TransformersBackend(str(tiny), batch_size=3, **variant)
    plain = TransformersBackend(str(tiny), batch_size=3, shared_prefix=False)
    _close(
        shared.digit_distributions(requests_, queries, prompts), plain.digit_distributions(requests_, queries, prompts)
    )
    assert shared.stats["plain_rows"] == 0 and plain.stats["prefills"] == 0
    assert shared.stats["prefills"] == len(requests_)


def _greedy_first_token(backend, request, query, restrict: bool, prompts) -> int:
    """Greedy `generate` on the whole prompt, built by the backend's input builder for the profile."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class DigitsOnly(LogitsProcessor):
        def __call__(self, input_ids, scores):
            mask = torch.full_like(scores, float("-inf"))
            mask[:, backend.digit_ids] = 0
            return scores + mask

    inputs = backend._inputs(prompts.profile)
    (item,), _ = backend._items([request], inputs)
    enc = inputs.full_batch([item.user], [query], [item.image], "cpu")
    procs = LogitsProcessorList([DigitsOnly()]) if restrict else None
    out = backend.model.generate(**enc, max_new_tokens=1, do_sample=False, logits_processor=procs)
    return int(out[0, enc["input_ids"].shape[1]])


@pytest.mark.parametrize("profile", ["reference", "native"])
def test_digit_argmax_equals_greedy_generate_restricted_to_digits(tiny, requests_, profile):
    prompts = PromptSet.from_taxonomy(Taxonomy(), profile=profile)
    backend = TransformersBackend(str(tiny), batch_size=4)
    queries = prompts.capability_queries[:3]
    dists = backend.digit_distributions(requests_, queries, prompts)
    for req, row in zip(requests_, dists):
        for q, dist in zip(queries, row):
            token = _greedy_first_token(backend, req, q, True, prompts)
            assert token == backend.digit_ids[int(np.argmax(dist))]


def test_digit_argmax_equals_unrestricted_greedy_when_digits_dominate(tiny_digits, requests_, prompts):
    backend = TransformersBackend(str(tiny_digits), batch_size=4)
    queries = prompts.capability_queries[:4]
    dists = backend.digit_distributions(requests_, queries, prompts)
    seen = set()
    for req, row in zip(requests_, dists):
        for q, dist in zip(queries, row):
            token = _greedy_first_token(backend, req, q, False, prompts)
            assert token in backend.digit_ids  # the model's own top token is a digit here
            assert token == backend.digit_ids[int(np.argmax(dist))]
            seen.add(int(np.argmax(dist)))
    assert len(seen) >= 2  # the argmax really depends on the input


def test_styles_are_labels_from_the_set(tiny, requests_, prompts):
    backend = TransformersBackend(str(tiny), batch_size=4, max_style_tokens=48)
    out = backend.styles(requests_, prompts)
    assert len(out) == len(requests_)
    for labels in out:
        assert isinstance(labels, list) and labels
        assert set(labels) <= set(prompts.styles)
        assert len(labels) == len(set(labels))
    plain = TransformersBackend(str(tiny), batch_size=3, prefill_batch_size=3, shared_prefix=False, max_style_tokens=48)
    assert plain.styles(requests_, prompts) == out
    padded = TransformersBackend(str(tiny), batch_size=4, prefill_batch_size=4, max_style_tokens=48)
    assert padded.styles(requests_, prompts) == out  # left-padded batched constrained decoding


def test_styles_reuse_the_prefix_of_the_scores(tiny, requests_, prompts):
    backend = TransformersBackend(str(tiny), batch_size=1)  # LRU nominally 2 prefixes; the call has 5
    backend.digit_distributions(requests_, prompts.capability_queries[:2], prompts)
    before = backend.stats["prefills"]
    backend.styles(requests_, prompts)
    assert backend.stats["prefills"] == before  # the 15th query reused the cached prefixes


def test_corrupt_image_fails_only_that_sample(tiny, requests_, prompts, tmp_path):
    bad_file = tmp_path / "broken.jpg"
    bad_file.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    bad = ScoreRequest(key="bad", sample_id="broken-sample", prefix=requests_[0].prefix, image_file=str(bad_file))
    mixed = [requests_[0], bad, requests_[-1]]
    queries = prompts.capability_queries[:3]
    backend = TransformersBackend(str(tiny), batch_size=4)
    out = backend.digit_distributions(mixed, queries, prompts)
    assert all(isinstance(f, Failure) and f.reason == "image_error" for f in out[1])
    assert "broken-sample" in out[1][0].message
    clean = backend.digit_distributions([requests_[0], requests_[-1]], queries, prompts)
    _close([out[0], out[2]], clean)
    styles = backend.styles(mixed, prompts)
    assert isinstance(styles[1], Failure) and isinstance(styles[0], list) and isinstance(styles[2], list)


def test_seam_fallback_uses_the_plain_path(tiny, requests_, prompts, monkeypatch):
    # When prefix and query tokenised apart differ from the joint tokenisation (possible with some
    # pre-tokenizers), those rows must go through the plain path and still give the same numbers.
    queries = prompts.capability_queries[:2]
    shared = TransformersBackend(str(tiny))
    plain = TransformersBackend(str(tiny), shared_prefix=False)
    expected = plain.digit_distributions(requests_[:2], queries, prompts)
    assert shared.digit_distributions(requests_[:2], queries, prompts) is not None
    assert shared.stats["seam_fallbacks"] == 0  # Qwen-style seam "\n" + letter never merges
    flaky = TransformersBackend(str(tiny))
    flaky._load()
    monkeypatch.setattr(flaky, "_seam_ok", lambda inputs, item, query, ids, head: query == queries[0])
    got = flaky.digit_distributions(requests_[:2], queries, prompts)
    _close(got, expected)
    assert flaky.stats["seam_fallbacks"] == 2 and flaky.stats["plain_rows"] == 2


def test_text_only_request_has_no_image_tokens(tiny, prompts):
    conv = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A cat."}]
    req = ScoreRequest(key="t2", sample_id="stray-image-token", prefix=prompts.prefix(conv), image_file=None)
    out = TransformersBackend(str(tiny)).digit_distributions([req], prompts.capability_queries[:1], prompts)
    assert isinstance(out[0][0], np.ndarray)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a local checkpoint directory"):
        TransformersBackend(str(tmp_path / "nope"))


def test_style_constraint_automaton():
    labels = ["yes/no", "multi-choice", "short description", "detailed description"]
    tokens = ["yes", "/no", ", ", "multi", "-choice", ",", " short", "short", " description", "x", "yes/no, multi"]
    c = StyleConstraint(labels, tokens)
    s = c.initial()
    assert not c.can_stop(s)
    assert c.advance(s, "x") is None
    s1 = c.advance(s, "yes/no")
    assert s1 is not None and c.can_stop(s1)
    s2 = c.advance(s1, ", multi-choice")
    assert s2 is not None and c.can_stop(s2)
    assert c.advance(s2, ", yes/no") is None  # no label twice
    assert c.advance(s1, ",short") is None  # the separator is ", "
    allowed = {tokens[t] for t, _ in c.allowed(s)}
    assert allowed == {"yes", "multi", "short", "yes/no, multi"}
