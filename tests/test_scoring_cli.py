"""`mmssr score` and `mmssr scores` end to end (in-process through the CLI dispatcher)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from _scoring_pool import write_pool

from mmssr_core.cli import main
from mmssr_core.schema import scores_schema
from mmssr_core.taxonomy import Taxonomy
from mmssr_core.testing.testserver import TestServer


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def pool(store, shared_data):
    write_pool(store, "tab", shared_data, "tabmwp", 6)
    write_pool(store, "mathv", shared_data, "mathv", 5)
    return store


def test_score_all_sources_then_scores_table(pool, tmp_path, capsys):
    rc = main(["score", "--store", str(pool.root), "--backend", "rules", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0
    summary = last_json(out)
    assert (summary["scored"], summary["cached"], summary["failed"], summary["total"]) == (11, 0, 0, 11)
    assert set(summary["sources"]) == {"tab", "mathv"} and summary["sources"]["tab"]["scored"] == 6
    assert summary["scorer"].startswith("rules:rules-v1/")
    assert "score tab: 6/6" in err and "samples/s" in err
    rc = main(["score", "--store", str(pool.root), "--source", "tab", "--json", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0 and last_json(out)["cached"] == 6 and err == ""
    dest = tmp_path / "scores.parquet"
    rc = main(["scores", "--store", str(pool.root), "--out", str(dest), "--json"])
    out, _ = capsys.readouterr()
    assert rc == 0
    info = last_json(out)
    assert info["rows"] == 11 and info["incomplete"] == 0 and info["sources"] == ["mathv", "tab"]
    table = pl.read_parquet(dest)
    assert table.schema == pl.Schema(scores_schema(Taxonomy().keys))
    assert table.height == 11


def test_targets_and_plain_output(pool, capsys):
    rc = main(["score", "--store", str(pool.root), "--source", "tab", "--targets", "styles"])
    out, _ = capsys.readouterr()
    assert rc == 0 and out.startswith("tab: 6 samples, 6 scored")
    assert pool.exists("style_labels", "tab") and not pool.exists("capability_scores", "tab")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backend", "rules", "--model", "x"], "--model"),
        (["--backend", "openai"], "--base-url"),
        (["--backend", "transformers"], "--model"),
        (["--source", "nope"], "not ingested"),
        (["--targets", "colours"], "--targets"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_user_errors_are_one_line(pool, capsys, argv, message):
    rc = main(["score", "--store", str(pool.root), *argv])
    _, err = capsys.readouterr()
    assert rc == 2 and message in err and "Traceback" not in err


def test_empty_store_is_a_user_error(tmp_path, capsys):
    assert main(["score", "--store", str(tmp_path / "none")]) == 2
    assert "no ingested sources" in capsys.readouterr().err
    assert main(["scores", "--store", str(tmp_path / "none"), "--out", str(tmp_path / "x.parquet")]) == 2


def test_openai_backend_through_cli(pool, capsys, monkeypatch):
    monkeypatch.setenv("SCORER_KEY", "sk-cli-secret")
    with TestServer(api_key="sk-cli-secret") as a, TestServer(api_key="sk-cli-secret") as b:
        rc = main(
            [
                "score",
                "--store",
                str(pool.root),
                "--source",
                "tab",
                "--backend",
                "openai",
                "--base-url",
                a.url,
                "--base-url",
                b.url,
                "--api-key-env",
                "SCORER_KEY",
                "--concurrency",
                "2",
                "--option",
                "backoff_base=0.01",
                "--json",
            ]
        )
        out, err = capsys.readouterr()
        assert rc == 0, err
        summary = last_json(out)
        assert summary["scored"] == 6 and summary["failed"] == 0
        assert summary["scorer"].startswith("openai:test-scorer/")
        assert a.total_served > 0 and b.total_served > 0
        assert a.total_served + b.total_served == 6 * 15
        assert "sk-cli-secret" not in out + err
