"""A split scorer: capabilities from one backend, styles from another, merged in one place in the core
(`mmssr_core.scoring.split`), which both `mmssr score --styles-backend` and the Dagster asset call."""

from __future__ import annotations

import json

import polars as pl

from mmssr_core.cli import main
from mmssr_core.schema import (
    CAPABILITY_TABLE,
    SCORE_CACHE_TABLE,
    SCORER_COLUMN,
    STYLE_TABLE,
)
from mmssr_core.scoring import get_backend
from mmssr_core.scoring.runner import ScoreRunResult
from mmssr_core.scoring.split import merge_results, score_source_split


def _ingest(tmp_path, store, n: int = 12) -> None:
    pool = tmp_path / "pool.jsonl"
    rows = [
        {
            "id": f"q{i}",
            "conversations": [
                {"from": "human", "value": f"Describe step {i} of the proof."},
                {"from": "gpt", "value": "First, " * (i + 1)},
            ],
        }
        for i in range(n)
    ]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["ingest", str(pool), "--source", "proofs", "--store", str(store.root), "--no-progress"]) == 0


def test_capabilities_and_styles_come_from_their_own_backend(tmp_path, store):
    _ingest(tmp_path, store)
    caps_backend, styles_backend = get_backend("rules"), get_backend("rules", sigma=0.5)
    res = score_source_split(store, "proofs", caps_backend, styles_backend, batch_size=4)
    caps, styles = store.read(CAPABILITY_TABLE, "proofs"), store.read(STYLE_TABLE, "proofs")
    cap_ids, style_ids = set(caps[SCORER_COLUMN].to_list()), set(styles[SCORER_COLUMN].to_list())
    assert len(cap_ids) == len(style_ids) == 1
    assert res.identity == f"{cap_ids.pop()} + styles:{style_ids.pop()}"
    caches = sorted(p.name for p in (store.root / SCORE_CACHE_TABLE).iterdir() if p.is_dir())
    assert len(caches) == 2  # one cache per backend identity (the sigma differs)
    assert (res.scored, res.failed, res.total) == (12, 0, 12)
    assert styles["styles"].list.len().min() >= 1
    again = score_source_split(store, "proofs", caps_backend, styles_backend)
    assert (again.scored, again.cached) == (0, 12)  # both caches answer the second time


def test_without_a_styles_backend_it_is_score_source(tmp_path, store):
    _ingest(tmp_path, store, 5)
    res = score_source_split(store, "proofs", get_backend("rules"), None)
    assert " + styles:" not in res.identity and res.targets == ("capabilities", "styles")
    only_styles = score_source_split(
        store, "proofs", get_backend("rules"), get_backend("rules", sigma=0.5), targets=("styles",)
    )
    assert only_styles.targets == ("styles",) and " + styles:" not in only_styles.identity
    assert only_styles.scored == 5  # the styles backend's own cache was empty


def test_merge_adds_reasons_and_keeps_the_larger_failure_count():
    a = ScoreRunResult(
        "s", scored=8, cached=0, failed=2, seconds=1.0, identity="A", total=10, failures_by_reason={"timeout": 2}
    )
    b = ScoreRunResult(
        "s",
        scored=9,
        cached=0,
        failed=3,
        seconds=0.5,
        identity="B",
        total=10,
        failures_by_reason={"timeout": 1, "malformed_answer": 2},
    )
    m = merge_results(a, b)
    assert (m.failed, m.scored, m.seconds, m.identity) == (3, 8, 1.5, "A + styles:B")
    assert m.failures_by_reason == {"timeout": 3, "malformed_answer": 2}


def test_the_command_line_takes_a_styles_backend(tmp_path, store, capsys):
    _ingest(tmp_path, store, 6)
    capsys.readouterr()
    rc = main(
        [
            "score",
            "--store",
            str(store.root),
            "--backend",
            "rules",
            "--styles-backend",
            "rules",
            "--styles-option",
            "sigma=0.5",
            "--json",
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert " + styles:rules:" in summary["scorer"] and summary["scored"] == 6
    styles = pl.read_parquet(store.path(STYLE_TABLE, "proofs"))
    assert styles.height == 6
    assert main(["score", "--store", str(store.root), "--styles-option", "sigma=0.5"]) == 2
    assert "--styles-option goes with --styles-backend" in capsys.readouterr().err
