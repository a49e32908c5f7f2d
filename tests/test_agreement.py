"""Agreement metrics on hand-made cases with known answers, plots, the CLI and the Dagster asset."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from mmssr_core.agreement import (
    AgreementError,
    compute_agreement,
    confusion,
    load_agreement,
    save_agreement,
    spearman,
    style_metrics,
    write_agreement,
)
from mmssr_core.schema import argmax_column, scores_schema
from mmssr_core.teacher import TEACHER_TABLE, teacher_labels_schema

KEYS = ["alpha", "beta"]


def teacher_frame(rows: list[dict], keys=KEYS) -> pl.DataFrame:
    schema = teacher_labels_schema(keys)
    full = [
        {c: r.get(c) for c in schema} | {"content_hash": r.get("content_hash", r["id"]), "teacher": "T@h/t1"}
        for r in rows
    ]
    return pl.DataFrame(full, schema=schema)


def scores_frame(rows: list[dict], keys=KEYS, with_argmax=True) -> pl.DataFrame:
    schema = scores_schema(keys, with_argmax=with_argmax)
    full = [{c: r.get(c) for c in schema} | {"scorer": "S/p1"} for r in rows]
    return pl.DataFrame(full, schema=schema)


def _pair(t_alpha, s_alpha, t_styles=None, s_styles=None, s_argmax=None):
    n = len(t_alpha)
    teacher = teacher_frame(
        [
            {
                "id": f"i{i}",
                "source": "src",
                "alpha": t_alpha[i],
                "beta": (t_alpha[i] + 1) % 6,
                "styles": (t_styles or [["yes/no"]] * n)[i],
            }
            for i in range(n)
        ]
    )
    scores = scores_frame(
        [
            {
                "id": f"i{i}",
                "source": "src",
                "alpha": s_alpha[i],
                "beta": float((t_alpha[i] + 1) % 6),
                argmax_column("alpha"): None if s_argmax is None else s_argmax[i],
                argmax_column("beta"): (t_alpha[i] + 1) % 6,
                "styles": (s_styles or [["yes/no"]] * n)[i],
            }
            for i in range(n)
        ]
    )
    return scores, teacher


# -- primitives --------------------------------------------------------------------------------
def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4) -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    # monotone but non-linear: still 1
    assert spearman([0.1, 0.2, 0.9, 5.0], [0, 1, 2, 5]) == pytest.approx(1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # constant side
    assert spearman([1], [2]) is None


def test_spearman_matches_pearson_of_ranks_on_random_data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 200).astype(float)
    y = x + rng.normal(0, 2, 200)

    def ranks(a):  # average ranks, written independently
        order = np.argsort(a, kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(1, len(a) + 1)
        for v in np.unique(a):
            m = a == v
            r[m] = r[m].mean()
        return r

    want = np.corrcoef(ranks(x), ranks(y))[0, 1]
    assert spearman(x, y) == pytest.approx(want, abs=1e-12)


def test_confusion_rows_are_teacher():
    m = confusion(pred=[0, 1, 1, 5], truth=[0, 2, 1, 5])
    assert m[0, 0] == 1 and m[2, 1] == 1 and m[1, 1] == 1 and m[5, 5] == 1 and m.sum() == 4


def test_style_metrics_hand_case():
    s = style_metrics(pred=[["a", "b"], ["c"], ["d"]], truth=[["a"], ["b", "c"], []])
    # sample 3 has no teacher labels: ignored. tp = a + c = 2, fp = b = 1, fn = b = 1
    assert s["n"] == 2
    assert s["micro_f1"] == pytest.approx(4 / 6)
    assert s["micro_precision"] == pytest.approx(2 / 3) and s["micro_recall"] == pytest.approx(2 / 3)
    assert s["primary_accuracy"] == pytest.approx(0.5)
    assert s["per_label"]["b"] == {"tp": 0, "fp": 1, "fn": 1, "f1": 0.0}


# -- compute_agreement -------------------------------------------------------------------------
def test_perfect_agreement():
    t = [0, 1, 2, 3, 4, 5, 3, 2]
    styles = [["multi-choice", "yes/no"], ["short description"]] * 4
    scores, teacher = _pair(t, [float(v) for v in t], styles, styles, s_argmax=t)
    r = compute_agreement(scores, teacher)
    assert r.n_matched == 8
    for c in r.capabilities:
        assert c["spearman"] == pytest.approx(1.0) and c["mae"] == 0.0 and c["accuracy"] == 1.0
        m = np.asarray(c["confusion"])
        assert (m == np.diag(np.diag(m))).all()
    assert r.mean_spearman == pytest.approx(1.0) and r.mean_mae == 0.0 and r.accuracy == 1.0
    assert r.styles["micro_f1"] == 1.0 and r.styles["primary_accuracy"] == 1.0


def test_reversed_scores():
    t = [0, 1, 2, 3, 4, 5]
    scores, teacher = _pair(t, [5.0 - v for v in t], s_argmax=[5 - v for v in t])
    r = compute_agreement(scores, teacher, ["alpha"])
    cap = r.capabilities[0]
    assert cap["spearman"] == pytest.approx(-1.0)
    assert cap["mae"] == pytest.approx(np.mean([5, 3, 1, 1, 3, 5]))
    assert np.asarray(cap["confusion"])[0, 5] == 1 and np.trace(np.asarray(cap["confusion"])) == 0


def test_mae_of_expected_scores_and_argmax_fallback():
    scores, teacher = _pair([1, 3], [1.5, 2.0])  # no argmax column values: rounded expected score
    scores = scores.drop(argmax_column("alpha"))
    r = compute_agreement(scores, teacher, ["alpha"])
    cap = r.capabilities[0]
    assert cap["mae"] == pytest.approx(0.75)
    assert np.asarray(cap["confusion"])[1, 2] == 1 and np.asarray(cap["confusion"])[3, 2] == 1


def test_failures_nulls_and_other_sources_are_left_out():
    t = [0, 1, 2, 3]
    scores, teacher = _pair(t, [0.0, 1.0, None, 3.0], s_argmax=[0, 1, None, 3])
    teacher = pl.concat(
        [
            teacher,
            teacher_frame(
                [
                    {"id": "i9", "source": "src", "failure": "partial_answer"},
                    {"id": "i0", "source": "other", "alpha": 5, "beta": 5, "styles": ["yes/no"]},
                ]
            ),
        ]
    )
    r = compute_agreement(scores, teacher, ["alpha"])
    assert r.n_labelled == 5 and r.n_matched == 4
    assert r.capabilities[0]["n"] == 3 and r.capabilities[0]["spearman"] == pytest.approx(1.0)


def test_no_overlap_is_an_error():
    scores, teacher = _pair([1, 2], [1.0, 2.0])
    with pytest.raises(AgreementError, match="no sample is both"):
        compute_agreement(scores.with_columns(pl.lit("x").alias("source")), teacher)
    with pytest.raises(AgreementError, match="no successful teacher label"):
        compute_agreement(scores, teacher.with_columns(pl.lit("oops").alias("failure")))


def test_plots_and_summary(tmp_path):
    t = [0, 1, 2, 3, 4, 5]
    scores, teacher = _pair(t, [v + 0.3 for v in t], s_argmax=t)
    r = compute_agreement(scores, teacher)
    paths = write_agreement(r, tmp_path / "out")
    for name in ("spearman", "mae", "confusion"):
        data = paths[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    summary = json.loads(paths["summary"].read_text())
    assert summary["mean_mae"] == pytest.approx(0.3 * 6 / 12 + 0.0)  # alpha off by 0.3, beta exact
    assert summary["plots"]["confusion"] == "confusion.png"
    assert "| alpha | 6 | 1.000 | 0.300 | 1.000 |" in paths["markdown"].read_text()


# -- CLI and asset -----------------------------------------------------------------------------
def _store_with(store, scores, teacher):
    store.write(TEACHER_TABLE, "src", teacher)
    return store


def test_cli_agreement(store, tmp_path, capsys, monkeypatch):
    from mmssr_core.cli import main

    t = [0, 1, 2, 3, 4, 5, 2]
    scores, teacher = _pair(t, [5.0 - v for v in t], s_argmax=[5 - v for v in t])
    _store_with(store, scores, teacher)
    sfile = tmp_path / "scores.parquet"
    scores.write_parquet(sfile)
    tax = tmp_path / "tax.json"
    tax.write_text(json.dumps({"extend": False, "capabilities": [{"key": "alpha"}, {"key": "beta"}]}))
    rc = main(
        [
            "agreement",
            "--store",
            str(store.root),
            "--scores",
            str(sfile),
            "--out",
            str(tmp_path / "agr"),
            "--taxonomy",
            str(tax),
            "--json",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [c["key"] for c in summary["capabilities"]] == KEYS
    assert summary["capabilities"][0]["spearman"] == pytest.approx(-1.0)
    assert summary["capabilities"][1]["spearman"] == pytest.approx(1.0)
    assert (tmp_path / "agr" / "confusion.png").exists()
    rc = main(["agreement", "--store", str(tmp_path / "empty"), "--scores", str(sfile), "--out", str(tmp_path / "x")])
    assert rc == 2 and "no teacher labels" in capsys.readouterr().err


def test_save_and_load(store):
    scores, teacher = _pair([0, 1, 2], [0.0, 1.0, 2.0], s_argmax=[0, 1, 2])
    assert load_agreement(store) is None
    paths = save_agreement(store, compute_agreement(scores, teacher))
    back = load_agreement(store)
    assert back["mean_spearman"] == pytest.approx(1.0)
    assert all(p.startswith(str(store.root)) for p in back["plots"].values())
    assert store.read("agreement", "pool")["key"].to_list() == KEYS and paths["table"].exists()


@pytest.mark.slow
def test_scorer_agreement_asset(store, tmp_path, monkeypatch):
    import dagster as dg

    from mmssr_assets.assets.agreement import scorer_agreement
    from mmssr_assets.resources import ScorerResource, StoreResource

    tax = tmp_path / "tax.json"
    tax.write_text(json.dumps({"extend": False, "capabilities": [{"key": "alpha"}, {"key": "beta"}]}))
    resources = {"store": StoreResource(root=str(store.root)), "scorer": ScorerResource(taxonomy_path=str(tax))}
    # without labels: recorded, nothing written, no failure
    res = dg.materialize([scorer_agreement], resources=resources)
    assert res.success
    assert not store.exists("agreement", "pool")
    t = [0, 1, 2, 3, 4, 5]
    scores, teacher = _pair(t, [float(v) for v in t], s_argmax=t)
    store.write("scores", "pool", scores)
    store.write(TEACHER_TABLE, "src", teacher)
    res = dg.materialize([scorer_agreement], resources=resources)
    assert res.success
    mats = res.asset_materializations_for_node("scorer_agreement")
    meta = mats[0].metadata
    assert meta["mean_spearman"].value == pytest.approx(1.0)
    assert meta["n_matched"].value == 6
    assert [r.data["capability"] for r in meta["agreement"].value.records] == ["alpha", "beta"]
    assert meta["scorer"].value == "S/p1" and "scorer_note" not in meta  # the label the test scores carry
    assert meta["plot_confusion"].value.startswith("![confusion](data:image/png;base64,")
    assert load_agreement(store)["n_matched"] == 6
