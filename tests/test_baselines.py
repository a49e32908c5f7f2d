"""Baselines beside the mmSSR rule: random, mean, capability-only, style-only (same interface)."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from selection_reference import reference_select, tie_key
from test_selection import CAPS, TAX, frame, picks, tables

from mmssr_core.baselines import mean_scores
from mmssr_core.selection import select


def pool(n=400, seed=0, sources="abcd"):
    rng = random.Random(seed)
    return [
        {
            "id": f"s{i}",
            "source": rng.choice(sources),
            "styles": rng.sample(["yes/no", "multi-choice", "comparison"], rng.randint(1, 2)),
            **{c: (None if rng.random() < 0.1 else rng.random() * 5) for c in CAPS},
        }
        for i in range(n)
    ]


def test_random_is_the_seeded_hash_order():
    rows = pool()
    for seed in (0, 5):
        sel = select(frame(rows), [40], method="random", seed=seed, taxonomy=TAX)["40"]
        expected = sorted(rows, key=lambda r: (tie_key(r["id"], seed), r["source"]))[:40]
        assert sel.frame["id"].to_list() == [r["id"] for r in expected]
        assert sel.frame["picked_by"].null_count() == 40 and sel.frame["bin"].null_count() == 40
        assert sel.per_capability == {}
    a = select(frame(rows), [40], method="random", seed=0, taxonomy=TAX)["40"].frame
    b = select(frame(rows), [40], method="random", seed=1, taxonomy=TAX)["40"].frame
    assert a["id"].to_list() != b["id"].to_list()


def test_random_ignores_scores_and_threshold():
    rows = [{"id": f"s{i}", "source": "x", "styles": [], "ocr": None} for i in range(30)]
    sel = select(frame(rows, ["ocr"]), [30], method="random", capabilities=["ocr"], threshold=3, taxonomy=TAX)["30"]
    assert sel.selected == 30 and not sel.short


def test_random_is_not_biased_to_a_source():
    n = 20_000
    rows = [{"id": f"{'ab'[i % 2]}/{i}", "source": "ab"[i % 2], "styles": ["yes/no"], "ocr": 1.0} for i in range(n)]
    sel = select(frame(rows, ["ocr"]), [0.1], method="random", capabilities=["ocr"], taxonomy=TAX)["0.1"]
    share_a = (sel.frame["source"] == "a").mean()
    assert abs(share_a - 0.5) < 0.03  # 2000 draws: 3 sigma is about 0.034 ... 0.5 +- 0.011 * 3


def test_mean_is_top_n_by_mean_with_missing_as_zero():
    rows = pool(300)
    rows[0].update({c: None for c in CAPS})  # no score at all: never qualifies
    rows[1].update({c: 5.0 for c in CAPS})
    df = frame(rows)
    sel = select(df, [50], method="mean", taxonomy=TAX)["50"]

    def mean(r):
        vals = [r[c] for c in CAPS]
        return None if all(v is None for v in vals) else sum(v or 0.0 for v in vals) / len(CAPS)

    ranked = sorted(
        (r for r in rows if mean(r) is not None and mean(r) > 0), key=lambda r: (-mean(r), tie_key(r["id"], 0))
    )
    assert sel.frame["id"].to_list() == [r["id"] for r in ranked[:50]]
    assert sel.frame["id"][0] == "s1"
    m = mean_scores(df, CAPS)
    assert m[0] == -np.inf and m[1] == 5.0


def test_mean_uses_the_chosen_capabilities_and_threshold():
    rows = [{"id": f"s{i}", "source": "x", "styles": [], "ocr": i / 2, "math": (10 - i) / 2} for i in range(10)]
    sel = select(frame(rows, ["ocr", "math"]), [3], method="mean", capabilities=["ocr"], taxonomy=TAX)["3"]
    assert sel.frame["id"].to_list() == ["s9", "s8", "s7"]
    sel = select(frame(rows, ["ocr", "math"]), [5], method="mean", capabilities=["ocr"], threshold=3, taxonomy=TAX)["5"]
    assert sel.frame["id"].to_list() == ["s9", "s8", "s7"] and sel.short


def test_mean_under_the_integer_rule_ranks_by_mean_integer_then_mean_expected():
    """Integer scores present: the mean integer decides (and must exceed the threshold), the mean expected
    score orders equal means, the id hash what is still equal; a missing score counts as 0."""
    rows = [
        {"id": "a", "source": "x", "styles": [], "ocr__argmax": 2, "ocr": 2.1, "math__argmax": 2, "math": 2.0},
        {"id": "b", "source": "x", "styles": [], "ocr__argmax": 3, "ocr": 2.6, "math__argmax": 1, "math": 1.4},
        {"id": "c", "source": "x", "styles": [], "ocr__argmax": 0, "ocr": 4.9, "math__argmax": 3, "math": 4.9},
        {"id": "d", "source": "x", "styles": [], "ocr__argmax": 4, "ocr": 3.5, "math__argmax": None, "math": None},
        {"id": "e", "source": "x", "styles": [], "ocr__argmax": 0, "ocr": 0.4, "math__argmax": 0, "math": 0.2},
    ]
    sel = select(frame(rows, ["ocr", "math"]), [5], method="mean", capabilities=["ocr", "math"], taxonomy=TAX)["5"]
    # means of integers: a 2, b 2, c 1.5, d 2, e 0 (never qualifies); means of expected: a 2.05, b 2.0, d 1.75
    assert sel.frame["id"].to_list() == ["a", "b", "d", "c"] and sel.short
    assert sel.rules == {"ocr": "integer > 0", "math": "integer > 0"}
    by_expected = select(
        frame(rows, ["ocr", "math"]), [5], method="mean", capabilities=["ocr", "math"], taxonomy=TAX, rank="expected"
    )["5"]
    assert by_expected.frame["id"].to_list() == ["c", "a", "b", "d", "e"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_style_only_equals_reference_with_constant_scores(case):
    rows, caps, N, threshold, seed, _ = case
    sel = select(
        frame(rows, caps), [N], method="style-only", capabilities=caps, threshold=threshold, seed=seed, taxonomy=TAX
    )[str(N)]
    const = [dict(r, const=1.0) for r in rows]
    expected, short = reference_select(const, ["const"], N, 0.0, seed)
    assert [(i, b) for i, _, b in picks(sel)] == [(i, b) for i, _, b in expected]
    assert sel.frame["picked_by"].null_count() == sel.selected
    assert sel.selected == N and not short and not sel.short


def test_style_only_balances_bins():
    rows = [{"id": f"a{i}", "source": "x", "styles": ["yes/no"], "ocr": 1.0} for i in range(90)]
    rows += [{"id": f"b{i}", "source": "x", "styles": ["comparison"], "ocr": 1.0} for i in range(10)]
    sel = select(frame(rows, ["ocr"]), [20], method="style-only", capabilities=["ocr"], taxonomy=TAX)["20"]
    assert sel.frame["bin"].value_counts().sort("bin").rows() == [("comparison+x", 10), ("yes/no+x", 10)]
    rnd = select(frame(rows, ["ocr"]), [20], method="random", capabilities=["ocr"], taxonomy=TAX)["20"]
    assert (rnd.frame["id"].str.starts_with("b")).sum() < 10


def test_capability_only_takes_each_share_from_the_top():
    rows = [
        {
            "id": f"s{i}",
            "source": "x",
            "styles": ["yes/no" if i % 2 else "comparison"],
            "ocr": i / 20,
            "math": (100 - i) / 20,
        }
        for i in range(100)
    ]
    sel = select(
        frame(rows, ["ocr", "math"]), [6], method="capability-only", capabilities=["ocr", "math"], taxonomy=TAX
    )["6"]
    assert picks(sel) == [
        ("s99", "ocr", None),
        ("s98", "ocr", None),
        ("s97", "ocr", None),
        ("s0", "math", None),
        ("s1", "math", None),
        ("s2", "math", None),
    ]
    assert sel.per_capability == {"ocr": 3, "math": 3}
    mm = select(frame(rows, ["ocr", "math"]), [6], capabilities=["ocr", "math"], taxonomy=TAX)["6"]
    assert set(mm.frame["bin"].to_list()) == {"yes/no+x", "comparison+x"}


@pytest.mark.parametrize("method", ["mmssr", "random", "mean", "capability-only", "style-only"])
def test_every_method_shares_the_output_contract(method):
    rows = pool(200)
    res = select(frame(rows), ["10%", 25], method=method, seed=3, taxonomy=TAX)
    for key, sel in res.items():
        f = sel.frame
        assert f.columns == ["id", "source", "rank", "picked_by", "bin"]
        assert f["rank"].to_list() == list(range(1, f.height + 1))
        assert f.select(pl.struct("source", "id").n_unique()).item() == f.height
        assert sel.method == method and sel.budget == key and sel.selected == f.height
    again = select(frame(rows).reverse(), ["10%", 25], method=method, seed=3, taxonomy=TAX)
    for key in res:
        assert again[key].frame.equals(res[key].frame)
