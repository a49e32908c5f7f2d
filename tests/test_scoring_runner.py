"""The scoring runner: one row per sample, cache reuse, failures recorded, identity changes rescore."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from _scoring_pool import pool_frame, shared_records, write_pool

from mmssr_core.prompts import PromptSet
from mmssr_core.schema import argmax_column, scores_schema
from mmssr_core.scoring.base import Failure, ScorerIdentity, get_backend
from mmssr_core.scoring.cache import ScoreCache
from mmssr_core.scoring.runner import (
    SCORE_FAILURES_SCHEMA,
    STYLE_LABELS_SCHEMA,
    build_scores_table,
    capability_scores_schema,
    score_source,
    score_targets_done,
)
from mmssr_core.taxonomy import DEFAULT_STYLES, Capability, Taxonomy


class CountingBackend:
    """Wraps a backend and counts the (sample, target) pairs it was asked for."""

    name = "counting"

    def __init__(self, inner, tag: str = "v1"):
        self.inner = inner
        self.tag = tag
        self.dist_keys: list[str] = []
        self.style_keys: list[str] = []
        self.calls = 0

    def identity(self, prompts):
        base = self.inner.identity(prompts)
        return ScorerIdentity("counting", base.model + "-" + self.tag, "", prompts.version)

    def digit_distributions(self, requests, queries, prompts):
        self.calls += 1
        self.dist_keys += [r.key for r in requests for _ in queries]
        return self.inner.digit_distributions(requests, queries, prompts)

    def styles(self, requests, prompts):
        self.style_keys += [r.key for r in requests]
        return self.inner.styles(requests, prompts)

    def close(self):
        pass


class FlakyBackend(CountingBackend):
    """Fails chosen samples in several ways: a Failure slot, an invalid distribution, an exception."""

    def __init__(self, inner, bad_ids: dict[str, str]):
        super().__init__(inner)
        self.bad_ids = dict(bad_ids)

    def identity(self, prompts):
        return ScorerIdentity("flaky", "flaky-1", "", prompts.version)

    def digit_distributions(self, requests, queries, prompts):
        if any(self.bad_ids.get(r.sample_id) == "raise" for r in requests):
            raise RuntimeError("engine exploded")
        out = super().digit_distributions(requests, queries, prompts)
        for i, r in enumerate(requests):
            how = self.bad_ids.get(r.sample_id)
            if how == "failure":
                out[i] = [Failure("timeout", "server too slow")] * len(queries)
            elif how == "nan":
                out[i] = [np.full(6, np.nan)] + out[i][1:]
            elif how == "one":
                out[i] = [np.array([0.5, 0.5, 0.5, 0, 0, 0])] + out[i][1:]
        return out

    def styles(self, requests, prompts):
        out = super().styles(requests, prompts)
        for i, r in enumerate(requests):
            if self.bad_ids.get(r.sample_id) == "style":
                out[i] = ["not-a-style"]
        return out


@pytest.fixture
def pool(store, shared_data):
    write_pool(store, "tab", shared_data, "tabmwp", 12)
    write_pool(store, "mathv", shared_data, "mathv", 10)
    return store


def test_rules_run_one_row_per_sample(pool):
    backend = get_backend("rules")
    res = score_source(pool, "tab", backend)
    raw = pool.read("raw_pool", "tab")
    assert (res.scored, res.cached, res.failed, res.total) == (12, 0, 0, 12)
    caps = pool.read("capability_scores", "tab")
    keys = Taxonomy().keys
    assert caps.schema == pl.Schema(capability_scores_schema(keys))
    assert caps["id"].to_list() == raw["id"].to_list()
    for k in keys:
        assert caps[k].null_count() == 0
        assert caps[k].min() >= 0 and caps[k].max() <= 5
        # the argmax is the integer nearest the mass, consistent with the expected score's bin
        assert caps[argmax_column(k)].dtype == pl.Int8
        assert set(caps[argmax_column(k)].to_list()) <= set(range(6))
    # expected scores vary (continuous), argmaxes are ints
    assert caps["stem_knowledge"].n_unique() > 6
    styles = pool.read("style_labels", "tab")
    assert styles.schema == pl.Schema(STYLE_LABELS_SCHEMA)
    assert styles["id"].to_list() == raw["id"].to_list()
    for labels in styles["styles"].to_list():
        assert labels and set(labels) <= set(DEFAULT_STYLES) and len(set(labels)) == len(labels)
    label = backend.identity(PromptSet.from_taxonomy(Taxonomy())).label()
    assert set(caps["scorer"].to_list()) == {label} == set(styles["scorer"].to_list())
    assert label.startswith("rules:rules-v1/p2-reference-")
    fails = pool.read("score_failures", "tab")
    assert fails.height == 0 and fails.schema == pl.Schema(SCORE_FAILURES_SCHEMA)


def test_expected_score_matches_cached_distribution(pool):
    backend = get_backend("rules")
    score_source(pool, "tab", backend)
    prompts = PromptSet.from_taxonomy(Taxonomy())
    cache = ScoreCache(pool, backend.identity(prompts))
    rows = cache.lookup().filter(pl.col("target") == "stem_knowledge")
    caps = pool.read("capability_scores", "tab")
    by_hash = {r["content_hash"]: r["dist"] for r in rows.iter_rows(named=True)}
    for r in caps.iter_rows(named=True):
        d = np.array(by_hash[r["content_hash"]])
        assert abs(d.sum() - 1) < 1e-9
        assert r["stem_knowledge"] == pytest.approx(float(np.dot(np.arange(6), d)))
        assert r["stem_knowledge__argmax"] == int(np.argmax(d))


def test_second_run_is_all_cached_and_new_samples_only_are_scored(pool, shared_data):
    backend = CountingBackend(get_backend("rules"))
    first = score_source(pool, "tab", backend, batch_size=5, chunk_size=4)
    assert first.scored == 12 and len(set(backend.dist_keys)) == 12
    before = pool.read("capability_scores", "tab")
    backend.dist_keys.clear(), backend.style_keys.clear()
    again = score_source(pool, "tab", backend)
    assert (again.scored, again.cached, again.failed, again.computed) == (0, 12, 0, 0)
    assert backend.dist_keys == [] and backend.style_keys == []
    assert pool.read("capability_scores", "tab").equals(before)
    # new samples arrive: only they are computed
    write_pool(pool, "tab", shared_data, "tabmwp", 17)
    grown = score_source(pool, "tab", backend)
    assert (grown.scored, grown.cached, grown.total) == (5, 12, 17)
    new_hashes = set(pool.read("raw_pool", "tab")["content_hash"].to_list()[12:])
    assert set(backend.dist_keys) == new_hashes and len(backend.style_keys) == 5
    caps = pool.read("capability_scores", "tab")
    assert caps.height == 17 and caps["stem_knowledge"].null_count() == 0
    assert caps.head(12).equals(before)


def test_identity_change_rescores_everything(pool):
    inner = get_backend("rules")
    a = CountingBackend(inner, tag="v1")
    score_source(pool, "tab", a)
    b = CountingBackend(inner, tag="v2")  # another model
    res = score_source(pool, "tab", b)
    assert res.scored == 12 and res.cached == 0 and len(set(b.dist_keys)) == 12
    assert pool.read("capability_scores", "tab")["scorer"].unique().to_list() == [res.identity]
    # a prompt change (extra capability -> new prompt version) also rescores
    tax = Taxonomy(Taxonomy().capabilities + (Capability("chart_reading", "chart reading"),))
    c = CountingBackend(inner, tag="v2")
    res2 = score_source(pool, "tab", c, taxonomy=tax)
    assert res2.scored == 12 and res2.cached == 0
    caps = pool.read("capability_scores", "tab")
    assert "chart_reading" in caps.columns and caps["chart_reading"].null_count() == 0
    assert res2.identity != res.identity


def test_duplicate_content_is_scored_once(store, shared_data):
    records, root = shared_records(shared_data, "tabmwp", 5)
    dupes = [dict(records[1], id="copy_a"), dict(records[3], id="copy_b"), dict(records[1], id="copy_c")]
    df = pool_frame("dup", records + dupes, root)
    store.write("raw_pool", "dup", df)
    backend = CountingBackend(get_backend("rules"))
    res = score_source(store, "dup", backend)
    assert res.total == 8 and res.scored == 8 and res.computed == 5
    assert len(backend.style_keys) == 5
    caps = store.read("capability_scores", "dup")
    assert caps.height == 8
    by_id = {r["id"]: r for r in caps.iter_rows(named=True)}
    assert (
        by_id["copy_a"]["stem_knowledge"]
        == by_id[records[1]["id"]]["stem_knowledge"]
        == by_id["copy_c"]["stem_knowledge"]
    )


def test_failures_are_recorded_never_silent_and_retried(pool):
    raw = pool.read("raw_pool", "tab")
    ids = raw["id"].to_list()
    bad = {ids[1]: "failure", ids[4]: "nan", ids[6]: "raise", ids[8]: "style", ids[10]: "one"}
    backend = FlakyBackend(get_backend("rules"), bad)
    res = score_source(pool, "tab", backend, batch_size=4)
    assert res.failed == 5 and res.scored == 7 and res.total == 12
    caps = pool.read("capability_scores", "tab")
    assert caps.height == 12
    row = {r["id"]: r for r in caps.iter_rows(named=True)}
    keys = Taxonomy().keys
    assert all(row[ids[1]][k] is None for k in keys)  # failed: null, never 0
    assert all(row[ids[6]][k] is None for k in keys)
    assert row[ids[4]][keys[0]] is None and row[ids[4]][keys[1]] is not None
    assert row[ids[10]][keys[0]] is None
    # neighbours of the sample whose batch raised are still scored
    assert row[ids[5]][keys[0]] is not None and row[ids[7]][keys[0]] is not None
    styles = {r["id"]: r["styles"] for r in pool.read("style_labels", "tab").iter_rows(named=True)}
    assert styles[ids[8]] is None and styles[ids[0]]
    fails = pool.read("score_failures", "tab")
    reasons = {(r["id"], r["target"]): r["reason"] for r in fails.iter_rows(named=True)}
    assert reasons[(ids[1], keys[0])] == "timeout"
    assert reasons[(ids[6], keys[3])] == "backend_error"
    assert reasons[(ids[4], keys[0])] == "invalid_distribution" and (ids[4], keys[1]) not in reasons
    assert reasons[(ids[10], keys[0])] == "invalid_distribution"
    assert reasons[(ids[8], "styles")] == "invalid_styles"
    assert fails.filter(pl.col("id") == ids[1]).height == len(keys)
    assert "engine exploded" in fails.filter(pl.col("id") == ids[6])["message"][0]
    assert res.failures_by_reason["timeout"] == len(keys)
    # the next run retries only what failed, and a healed backend completes the table
    backend.bad_ids.clear()
    backend.dist_keys.clear(), backend.style_keys.clear()
    res2 = score_source(pool, "tab", backend)
    assert (res2.failed, res2.cached, res2.scored) == (0, 7, 5)
    # styles: the style failure, and the sample whose engine call raised (both of its targets failed)
    assert sorted(backend.style_keys) == sorted(raw.filter(pl.col("id").is_in([ids[6], ids[8]]))["content_hash"])
    h4 = raw.filter(pl.col("id") == ids[4])["content_hash"][0]
    assert backend.dist_keys.count(h4) == 1  # only the one failed capability of that sample
    assert pool.read("score_failures", "tab").height == 0
    caps = pool.read("capability_scores", "tab")
    assert all(caps[k].null_count() == 0 for k in keys)


def test_targets_split_across_backends(pool):
    """Styles from one backend, scores from another: tables and failures of each target kept apart."""
    styler = get_backend("rules")
    scorer = FlakyBackend(get_backend("rules"), {pool.read("raw_pool", "tab")["id"][0]: "failure"})
    r1 = score_source(pool, "tab", styler, targets=("styles",))
    assert r1.targets == ("styles",)
    assert pool.exists("style_labels", "tab") and not pool.exists("capability_scores", "tab")
    r2 = score_source(pool, "tab", scorer, targets=("capabilities",))
    assert r2.failed == 1
    fails = pool.read("score_failures", "tab")
    assert set(fails["target"].to_list()) == set(Taxonomy().keys)
    table = build_scores_table(pool, ["tab"])
    assert table.schema == pl.Schema(scores_schema(Taxonomy().keys))
    assert table["styles"].null_count() == 0
    assert all("styles:rules:rules-v1" in s and s.startswith("flaky:flaky-1") for s in table["scorer"])
    # rerunning styles does not wipe the capability failures
    score_source(pool, "tab", styler, targets=("styles",))
    assert pool.read("score_failures", "tab").height == len(Taxonomy().keys)


def test_build_scores_table_and_done_check(pool, shared_data):
    backend = get_backend("rules")
    score_source(pool, "tab", backend)
    score_source(pool, "mathv", backend)
    table = build_scores_table(pool)
    keys = Taxonomy().keys
    assert table.schema == pl.Schema(scores_schema(keys))
    assert table.height == 22 and sorted(table["source"].unique().to_list()) == ["mathv", "tab"]
    assert table.select(pl.any_horizontal([pl.col(k).is_null() for k in keys]).sum()).item() == 0
    prompts = PromptSet.from_taxonomy(Taxonomy())
    ident = backend.identity(prompts)
    assert score_targets_done(pool, "tab", ident)
    assert not score_targets_done(pool, "tab", ScorerIdentity("rules", "other"))
    write_pool(pool, "tab", shared_data, "tabmwp", 13)  # the pool changed
    assert not score_targets_done(pool, "tab", ident)
    # a taxonomy with a capability the tables lack: null column, not an error
    tax = Taxonomy(Taxonomy().capabilities + (Capability("chart_reading", "chart reading"),))
    wide = build_scores_table(pool, ["mathv"], tax)
    assert wide["chart_reading"].null_count() == 10


def test_empty_source(store):
    store.write("raw_pool", "empty", pool_frame("empty", [], store.root))
    res = score_source(store, "empty", get_backend("rules"))
    assert (res.total, res.scored, res.failed) == (0, 0, 0)
    assert store.read("capability_scores", "empty").height == 0
    assert build_scores_table(store, ["empty"]).height == 0


def test_text_only_and_broken_image(store, shared_data, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    records = [
        {"id": "text", "conversations": [{"from": "human", "value": "What is 2+3?"}, {"from": "gpt", "value": "5"}]},
        {
            "id": "broken",
            "image": str(bad),
            "conversations": [
                {"from": "human", "value": "<image>\nWhat does the sign say?"},
                {"from": "gpt", "value": "STOP"},
            ],
        },
    ]
    store.write("raw_pool", "odd", pool_frame("odd", records, tmp_path))
    res = score_source(store, "odd", get_backend("rules"))
    assert res.total == 2 and res.failed == 1
    fails = store.read("score_failures", "odd")
    assert set(fails["reason"].to_list()) == {"image_error"} and set(fails["id"].to_list()) == {"broken"}
    assert "broken.png" in fails["message"][0]
    caps = {r["id"]: r for r in store.read("capability_scores", "odd").iter_rows(named=True)}
    assert caps["text"]["stem_knowledge"] is not None and caps["broken"]["stem_knowledge"] is None
    # styles need no image: the broken-image sample still has styles
    styles = {r["id"]: r["styles"] for r in store.read("style_labels", "odd").iter_rows(named=True)}
    assert styles["broken"] and styles["text"]


def test_progress_callback(pool):
    seen = []
    score_source(pool, "tab", get_backend("rules"), batch_size=5, progress=seen.append)
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == 12
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    seen.clear()
    score_source(pool, "tab", get_backend("rules"), progress=seen.append)
    assert seen[0].cached == 12 and seen[-1].done == 12


def test_result_to_dict_is_json(pool):
    res = score_source(pool, "tab", get_backend("rules"))
    d = json.loads(json.dumps(res.to_dict()))
    assert {"source", "scored", "cached", "failed", "seconds", "identity"} <= set(d)
