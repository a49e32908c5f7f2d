"""The mmSSR selection rule: hand-computed examples, properties, and exact agreement with a slow
straightforward implementation (tests/selection_reference.py) on random tables."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from selection_reference import capability_basis, reference_select, tie_key

from mmssr_core.selection import (
    Engine,
    SelectionInputError,
    parse_budget,
    select,
    tie_keys,
    validate_scores,
)
from mmssr_core.taxonomy import taxonomy_from_dict

CAPS = ["ocr", "math", "chart", "count"]
TAX = taxonomy_from_dict({"extend": False, "capabilities": [{"key": k} for k in CAPS]})


def frame(rows: list[dict], caps=CAPS) -> pl.DataFrame:
    """A scores table: a float column per capability that some row has (or every one when no row has any
    column of it), and an Int8 `<cap>__argmax` column where rows carry that key."""
    schema = {"id": pl.Utf8, "source": pl.Utf8, "styles": pl.List(pl.Utf8)}
    for c in caps:
        has_integer = any(f"{c}__argmax" in r for r in rows)
        if any(c in r for r in rows) or not has_integer:
            schema[c] = pl.Float64
        if has_integer:
            schema[f"{c}__argmax"] = pl.Int8
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)


def picks(sel) -> list[tuple[str, str, str]]:
    f = sel.frame
    return list(zip(f["id"].to_list(), f["picked_by"].to_list(), f["bin"].to_list()))


def run(rows, N, caps=None, **kw):
    caps = caps or [c for c in CAPS if any(c in r or f"{c}__argmax" in r for r in rows)]
    return select(frame(rows, caps), [N], capabilities=caps, taxonomy=TAX, **kw)[str(N)]


# ---------------------------------------------------------------------------------------------
# hand-computed examples
# ---------------------------------------------------------------------------------------------
def test_hand_computed_two_capabilities():
    """Worked by hand (distinct scores, so the tie key plays no part):

    Round 1 (share = 5 // 2 = 2).
    ocr ranks (score > 0): s1 5.0, s7 4.8, s2 4.0, s3 3.0, s4 2.0, s5 1.0 (s6 scores 0: not eligible).
      Bins: yes/no+x [s1, s2], unstyled+y [s7], multi-choice+x [s3, then s2 by its 2nd label],
      yes/no+y [s4], comparison+y [s5]. Visit by size then label: comparison+y, unstyled+y, yes/no+y,
      multi-choice+x, yes/no+x. quota = max(2 // 5, 1) = 1 -> s5, s7; k reached.
    math ranks the rest: s2 4.5, s3 4.0, s4 3.0, s6 2.0, s1 1.0.
      Bins: yes/no+y [s4] (1), yes/no+x [s2, s1] (2), multi-choice+x [s3, s6, s2] (3).
      quota = max(2 // 3, 1) = 1 -> s4, s2.
    Round 2 (share = max(1 // 2, 1) = 1). ocr ranks s1 5.0, s3 3.0: bins multi-choice+x [s3] and
      yes/no+x [s1], both size 1, label order -> s3. Budget reached.
    The best OCR sample s1 is never chosen: the balance across styles and sources wins.
    """
    rows = [
        {"id": "s1", "source": "x", "styles": ["yes/no"], "ocr": 5.0, "math": 1.0},
        {"id": "s2", "source": "x", "styles": ["yes/no", "multi-choice"], "ocr": 4.0, "math": 4.5},
        {"id": "s3", "source": "x", "styles": ["multi-choice"], "ocr": 3.0, "math": 4.0},
        {"id": "s4", "source": "y", "styles": ["yes/no"], "ocr": 2.0, "math": 3.0},
        {"id": "s5", "source": "y", "styles": ["comparison"], "ocr": 1.0, "math": 5.0},
        {"id": "s6", "source": "x", "styles": ["multi-choice"], "ocr": 0.0, "math": 2.0},
        {"id": "s7", "source": "y", "styles": [], "ocr": 4.8, "math": None},
    ]
    sel = run(rows, 5, caps=["ocr", "math"])
    assert picks(sel) == [
        ("s5", "ocr", "comparison+y"),
        ("s7", "ocr", "unstyled+y"),
        ("s4", "math", "yes/no+y"),
        ("s2", "math", "yes/no+x"),
        ("s3", "ocr", "multi-choice+x"),
    ]
    assert sel.frame["rank"].to_list() == [1, 2, 3, 4, 5]
    assert sel.frame["source"].to_list() == ["y", "y", "y", "x", "x"]
    assert sel.per_capability == {"ocr": 3, "math": 2}
    assert not sel.short and sel.requested == sel.selected == 5


def test_hand_computed_carry_over():
    """One capability, N = 6, two bins: comparison+x [a1] and yes/no+x [b1..b8].
    quota = 6 // 2 = 3; comparison+x gives 1 and carries 2; yes/no+x then gives 3 + 2 = 5."""
    rows = [{"id": "a1", "source": "x", "styles": ["comparison"], "ocr": 1.0}]
    rows += [{"id": f"b{i}", "source": "x", "styles": ["yes/no"], "ocr": (10.0 - i) / 2} for i in range(1, 9)]
    sel = run(rows, 6, caps=["ocr"])
    assert [p[0] for p in picks(sel)] == ["a1", "b1", "b2", "b3", "b4", "b5"]
    assert [p[2] for p in picks(sel)] == ["comparison+x"] + ["yes/no+x"] * 5


def test_hand_computed_second_labels_and_availability():
    """Bins: multi-choice+x [m1, m2] (2), comparison+x [c1, c2, c3] (3), yes/no+x [y1, y2, m1] (3; m1 by its
    second label). Round 1, k = 4, quota = max(4 // 3, 1) = 1: m1; c1; yes/no+x has m1 taken already, so
    its first available is y1. Round 2, k = 1: bins multi-choice+x [m2], yes/no+x [y2], comparison+x
    [c2, c3] -> m2."""
    rows = [
        {"id": "m1", "source": "x", "styles": ["multi-choice", "yes/no"], "ocr": 4.5},
        {"id": "m2", "source": "x", "styles": ["multi-choice"], "ocr": 4.0},
        {"id": "y1", "source": "x", "styles": ["yes/no"], "ocr": 3.5},
        {"id": "y2", "source": "x", "styles": ["yes/no"], "ocr": 3.0},
        {"id": "c1", "source": "x", "styles": ["comparison"], "ocr": 2.5},
        {"id": "c2", "source": "x", "styles": ["comparison"], "ocr": 2.0},
        {"id": "c3", "source": "x", "styles": ["comparison"], "ocr": 1.5},
    ]
    sel = run(rows, 4, caps=["ocr"])
    assert picks(sel) == [
        ("m1", "ocr", "multi-choice+x"),
        ("c1", "ocr", "comparison+x"),
        ("y1", "ocr", "yes/no+x"),
        ("m2", "ocr", "multi-choice+x"),
    ]


def test_take_never_exceeds_its_share():
    """x carries three labels, so after taking it bins B and C are empty and carry 2 into D. The reference
    code would then take 3 from D and overshoot k = 2; the rule takes *up to* the share."""
    rows = [{"id": "x", "source": "s", "styles": ["comparison", "coordinate", "multi-choice"], "ocr": 4.5}]
    rows += [{"id": f"y{i}", "source": "s", "styles": ["yes/no"], "ocr": 5.0 - i} for i in range(5)]
    sel = run(rows, 2, caps=["ocr"])
    assert [p[0] for p in picks(sel)] == ["x", "y0"]
    assert sel.selected == 2


def test_capability_without_eligible_sample_is_dropped():
    """The reference asserts (crashes) here; the rule drops the capability and carries on."""
    rows = [{"id": f"s{i}", "source": "x", "styles": ["yes/no"], "ocr": (i + 1) / 2, "math": 0.0} for i in range(6)]
    sel = run(rows, 4, caps=["math", "ocr"])
    assert sel.selected == 4 and not sel.short
    assert sel.per_capability == {"math": 0, "ocr": 4}
    assert [p[0] for p in picks(sel)] == ["s5", "s4", "s3", "s2"]


def test_all_capabilities_exhausted_gives_short_selection():
    """The reference divides by zero here; the rule returns what it selected and says why."""
    rows = [
        {"id": "a", "source": "x", "styles": ["yes/no"], "ocr": 3.0, "math": None},
        {"id": "b", "source": "x", "styles": ["yes/no"], "ocr": 0.0, "math": 2.0},
        {"id": "c", "source": "y", "styles": ["comparison"], "ocr": None, "math": 0.5},
        {"id": "d", "source": "y", "styles": ["comparison"], "ocr": 0.0, "math": 0.0},
        {"id": "e", "source": "y", "styles": [], "ocr": None, "math": None},
    ]
    sel = run(rows, 5, caps=["ocr", "math"])
    assert sel.short and sel.selected == 3 and sel.requested == 5
    assert sorted(p[0] for p in picks(sel)) == ["a", "b", "c"]
    assert "3 of 5" in sel.reason and "ocr" in sel.reason and "math" in sel.reason
    assert any("3 of 5" in w for w in sel.warnings)


@pytest.mark.parametrize("case", ["threshold", "all_nan", "integers_zero"])
def test_nothing_selectable_is_an_error_with_the_reason(case):
    """An empty selection is never returned as a result: the error says which rule held for no sample."""
    rows = [{"id": f"s{i}", "source": "x", "styles": ["yes/no"], "ocr": 1.0 + i / 10, "math": 2.0} for i in range(5)]
    kw = {}
    if case == "threshold":
        kw["threshold"] = 4.5
        expect = "float > 4.5 holds for none (0 of 5 missing)"
    elif case == "all_nan":
        rows = [dict(r, ocr=float("nan"), math=None) for r in rows]
        expect = "float > 0 holds for none (5 of 5 missing)"
    else:
        rows = [dict(r, ocr__argmax=0, math__argmax=0) for r in rows]
        expect = "integer > 0 holds for none (0 of 5 missing)"
    with pytest.raises(SelectionInputError, match="nothing to select") as exc:
        run(rows, 2, caps=["ocr", "math"], **kw)
    assert expect in str(exc.value) and "math:" in str(exc.value)


def test_threshold_is_strict_and_missing_never_qualifies():
    rows = [
        {"id": "a", "source": "x", "styles": ["yes/no"], "ocr": 2.0},
        {"id": "b", "source": "x", "styles": ["yes/no"], "ocr": 2.5},
        {"id": "c", "source": "x", "styles": ["yes/no"], "ocr": float("nan")},
        {"id": "e", "source": "x", "styles": ["yes/no"], "ocr": None},
    ]
    sel = run(rows, 3, caps=["ocr"], threshold=2.0)
    assert [p[0] for p in picks(sel)] == ["b"]
    assert sel.short


@pytest.mark.parametrize("value", [5.5, -0.5, float("inf"), float("-inf"), 10.0])
def test_scores_outside_the_scale_are_rejected_naming_rows_and_columns(value):
    """Scores live on the scorer's 0..5 scale; anything else is another scale (or garbage), not a score."""
    rows = [{"id": f"s{i}", "source": "x", "styles": ["yes/no"], "ocr": 1.0, "math": 2.0} for i in range(4)]
    rows[2]["math"] = value
    with pytest.raises(SelectionInputError) as exc:
        run(rows, 2, caps=["ocr", "math"])
    msg = str(exc.value)
    assert "0..5" in msg and "math (1 row)" in msg and "'s2' (source 'x')" in msg and "ocr" not in msg


def test_integer_scores_outside_the_scale_or_fractional_are_rejected():
    rows = [{"id": f"s{i}", "source": "x", "styles": ["yes/no"], "ocr": 1.0, "ocr__argmax": 1} for i in range(4)]
    rows[1]["ocr__argmax"] = 7
    with pytest.raises(SelectionInputError, match=r"integers within 0\.\.5.*ocr__argmax \(1 row\).*'s1'"):
        run(rows, 2, caps=["ocr"])
    df = frame(rows[:1] + rows[2:], ["ocr"]).with_columns(pl.Series("ocr__argmax", [1.0, 2.5, 3.0]))
    with pytest.raises(SelectionInputError, match=r"ocr__argmax \(1 row\).*'s2'.*2\.5"):
        select(df, [1], capabilities=["ocr"], taxonomy=TAX)


def test_ties_follow_the_seeded_hash_of_the_id():
    rows = [{"id": f"s{i}", "source": "x", "styles": ["yes/no"], "ocr": 1.0} for i in range(50)]
    for seed in (0, 1, 7):
        sel = run(rows, 10, caps=["ocr"], seed=seed)
        expected = sorted((r["id"] for r in rows), key=lambda i: tie_key(i, seed))[:10]
        assert [p[0] for p in picks(sel)] == expected
    assert [p[0] for p in picks(run(rows, 10, caps=["ocr"], seed=0))] != [
        p[0] for p in picks(run(rows, 10, caps=["ocr"], seed=1))
    ]


def test_same_id_in_two_sources_is_allowed_and_ordered_by_source():
    rows = [
        {"id": "0", "source": "b", "styles": ["yes/no"], "ocr": 1.0},
        {"id": "0", "source": "a", "styles": ["yes/no"], "ocr": 1.0},
    ]
    sel = run(rows, 2, caps=["ocr"])
    assert sel.frame.select("source", "id").rows() in ([("a", "0"), ("b", "0")], [("b", "0"), ("a", "0")])
    ref, _ = reference_select(rows, ["ocr"], 2)
    assert picks(sel) == ref


# ---------------------------------------------------------------------------------------------
# the paper's rule: the integer score decides, the expected score breaks ties
# ---------------------------------------------------------------------------------------------
PAPER_ROWS = [  # one capability, one bin: only the ranking matters
    {"id": "a", "source": "x", "styles": ["yes/no"], "ocr__argmax": 3, "ocr": 2.6},
    {"id": "b", "source": "x", "styles": ["yes/no"], "ocr__argmax": 2, "ocr": 2.9},
    {"id": "c", "source": "x", "styles": ["yes/no"], "ocr__argmax": 3, "ocr": 3.1},
    {"id": "d", "source": "x", "styles": ["yes/no"], "ocr__argmax": 0, "ocr": 4.9},
    {"id": "e", "source": "x", "styles": ["yes/no"], "ocr__argmax": 3, "ocr": None},
    {"id": "f", "source": "x", "styles": ["yes/no"], "ocr__argmax": None, "ocr": 4.0},
    {"id": "g", "source": "x", "styles": ["yes/no"], "ocr__argmax": 1, "ocr": 1.0},
]


def test_integer_score_decides_and_expected_breaks_ties():
    """Integer 3 beats integer 2 whatever the expected scores; within integer 3, expected 3.1 > 2.6 > missing.
    d (integer 0, the highest expected score) and f (no integer) never qualify: 5 of 6, short."""
    sel = run(PAPER_ROWS, 6, caps=["ocr"])
    assert [p[0] for p in picks(sel)] == ["c", "a", "e", "b", "g"]
    assert sel.short and "integer score > 0" in sel.reason
    assert sel.rank_mode == "integer" and sel.rules == {"ocr": "integer > 0"}
    assert sel.summary()["rules"] == {"ocr": "integer > 0"} and sel.summary()["rank"] == "integer"
    assert [p[0] for p in picks(run(PAPER_ROWS, 3, caps=["ocr"], threshold=2))] == ["c", "a", "e"]


def test_expected_score_ranking_is_an_opt_in():
    sel = run(PAPER_ROWS, 6, caps=["ocr"], rank="expected")
    assert [p[0] for p in picks(sel)] == ["d", "f", "c", "b", "a", "g"]
    assert not sel.short and sel.rank_mode == "expected" and sel.rules == {"ocr": "expected > 0"}


def test_float_only_tables_and_empty_integer_columns_rank_on_the_float():
    rows = [{k: v for k, v in r.items() if k != "ocr__argmax"} for r in PAPER_ROWS]
    sel = run(rows, 6, caps=["ocr"])
    assert [p[0] for p in picks(sel)] == ["d", "f", "c", "b", "a", "g"] and sel.rules == {"ocr": "float > 0"}
    empty = [dict(r, ocr__argmax=None) for r in PAPER_ROWS]  # an integer column without a value
    assert picks(run(empty, 6, caps=["ocr"])) == picks(sel)
    only_integers = [{k: v for k, v in r.items() if k != "ocr"} for r in PAPER_ROWS]
    sel = run(only_integers, 5, caps=["ocr"])  # no expected score: ties straight to the id hash
    assert [p[0] for p in picks(sel)] == sorted("ace", key=lambda i: tie_key(i, 0)) + ["b", "g"]


def test_rows_with_expected_but_no_integer_score_are_counted_in_a_warning():
    sel = run(PAPER_ROWS, 2, caps=["ocr"])
    assert any("1 score(s) have an expected score but no integer score" in w for w in sel.warnings)


def sparse_table(n=2000, seed=0):
    """Capabilities ocr and math rate ~1% of samples above 0; chart and count ~60%. Expected scores are
    above 0 almost everywhere (as a scorer's are), so only the integer tells the 1% apart."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {
            "id": f"s{i}",
            "source": rng.choice("ab"),
            "styles": rng.sample(["yes/no", "multi-choice", "comparison"], rng.randint(1, 2)),
        }
        for c, p in (("ocr", 0.01), ("math", 0.01), ("chart", 0.6), ("count", 0.6)):
            integer = rng.randint(1, 5) if rng.random() < p else 0
            row[c + "__argmax"] = integer
            row[c] = round(min(integer + rng.random() * 0.9, 5.0), 3) if integer else round(0.1 + rng.random() * 0.8, 3)
        rows.append(row)
    return rows


def test_sparse_capabilities_never_pick_samples_their_integer_rates_zero():
    """The issue's case: at 30%, ranking on the expected score took ~1/4 of the picks from samples the picking
    capability rated 0. Under the integer rule the sparse capabilities run dry and drop out; the others fill."""
    rows = sparse_table()
    by_id = {r["id"]: r for r in rows}
    sel = run(rows, "30%", caps=CAPS)
    assert sel.selected == sel.requested == 600 and not sel.short
    for sample, cap, _ in picks(sel):
        assert by_id[sample][cap + "__argmax"] > 0, (sample, cap)
    for cap in ("ocr", "math"):
        eligible = sum(r[cap + "__argmax"] > 0 for r in rows)
        assert 0 < sel.per_capability[cap] <= eligible < 40
    assert sel.per_capability["chart"] + sel.per_capability["count"] >= 600 - 80
    check_against_reference(rows, CAPS, 600, 0.0, 0)


def test_every_capability_running_dry_gives_a_short_selection_not_a_crash():
    rows = sparse_table(600, seed=1)
    eligible = sum(any(r[c + "__argmax"] > 3 for c in CAPS) for r in rows)
    sel = run(rows, 300, caps=CAPS, threshold=3)
    assert sel.short and sel.selected == eligible < 300
    assert "exhausted in order: ocr, math" in sel.reason or "exhausted in order: math, ocr" in sel.reason
    assert "integer score > 3" in sel.reason


def test_pool_size_makes_fractions_of_the_ingested_pool():
    """A deduplicated table: 10% means 10% of the pool as ingested; a count stays a count."""
    rows = [{"id": f"s{i}", "source": "x", "styles": ["yes/no"], "ocr": 1 + (i % 4)} for i in range(100)]
    res = select(frame(rows, ["ocr"]), ["10%", 0.5, 7], capabilities=["ocr"], taxonomy=TAX, pool_size=180)
    assert [s.requested for s in res.values()] == [18, 90, 7]
    assert res["10%"].summary()["pool_size"] == 180 and res["10%"].summary()["table_rows"] == 100
    plain = select(frame(rows, ["ocr"]), ["10%"], capabilities=["ocr"], taxonomy=TAX)["10%"]
    assert plain.requested == 10 and plain.pool_size == plain.table_rows == 100
    # more than the (deduplicated) table holds: a short selection that says why, not an error
    sel = select(frame(rows, ["ocr"]), [0.6], capabilities=["ocr"], taxonomy=TAX, pool_size=180)["0.6"]
    assert sel.short and sel.requested == 108 and sel.selected == 100
    assert sel.reason.startswith("the scores table holds 100 samples, fewer than the 108 asked for (pool of 180)")
    with pytest.raises(SelectionInputError, match="pool_size 50 must be"):
        select(frame(rows, ["ocr"]), [0.1], capabilities=["ocr"], taxonomy=TAX, pool_size=50)


# ---------------------------------------------------------------------------------------------
# the fast engine equals the straightforward reference, exactly
# ---------------------------------------------------------------------------------------------
STYLE_POOL = ["yes/no", "multi-choice", " comparison", "comparison", "", None, "odd style"]


# expected scores that pack to the same ranking key inside one integer class (8 * integer + expected rounds
# them together), so the engine must fall back to the exact expected score before the id hash
NEAR_TIES = [1.0, math.nextafter(1.0, 2.0), 2.5, math.nextafter(2.5, 3.0), 4.0, 0.0, 5.0]
TABLE_KINDS = ("float", "integral", "paper", "argmax-only")


def _scores(draw, kind: str) -> dict:
    """One row's scores for one capability under a table kind (None/NaN: missing)."""
    missing = st.sampled_from([None, float("nan")])
    if kind in ("float", "integral"):
        score = st.integers(0, 3).map(float) if kind == "integral" else st.floats(0, 5).map(lambda v: round(v, 2))
        return {"": draw(st.one_of(score, score, score, missing))}
    integer = draw(st.one_of(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.none()))
    if kind == "argmax-only":
        return {"__argmax": integer}
    expected = draw(st.one_of(st.sampled_from(NEAR_TIES), st.floats(0, 5).map(lambda v: round(v, 1)), missing))
    return {"__argmax": integer, "": expected}


@st.composite
def tables(draw, max_rows=40, kinds=TABLE_KINDS):
    """(rows, caps, N, threshold, seed, rank): a random scores table of one kind and a rank mode it supports."""
    caps = draw(
        st.permutations(CAPS).map(lambda p: list(p)).flatmap(lambda p: st.integers(1, len(p)).map(lambda k: p[:k]))
    )
    n = draw(st.integers(1, max_rows))
    kind = draw(st.sampled_from(kinds))
    rows = []
    for i in range(n):
        row = {
            "id": draw(st.sampled_from([f"s{i}", f"id-{i}", f"é{i}", f"{i:08d}-long-identifier"])),
            "source": draw(st.sampled_from(["a", "b", "c"])),
            "styles": draw(st.lists(st.sampled_from(STYLE_POOL), max_size=4)),
        }
        for c in caps:
            row.update({c + suffix: v for suffix, v in _scores(draw, kind).items()})
        rows.append(row)
    N = draw(st.integers(1, n))
    threshold = draw(st.sampled_from([0.0, 0.0, 1.0, 1.5, -1.0]))
    seed = draw(st.integers(0, 5))
    rank = draw(st.sampled_from(["integer", "integer", "expected"])) if kind == "paper" else "integer"
    return rows, caps, N, threshold, seed, rank


def qualifies(rows, row, cap, threshold, rank) -> bool:
    """The eligibility rule, written out: the integer score when the table has it (else the float) > t."""
    col = cap + "__argmax" if capability_basis(rows, cap, rank) == "integer" else cap
    v = row.get(col)
    return v is not None and v == v and v > threshold


def check_against_reference(rows, caps, N, threshold, seed, rank="integer", method="mmssr"):
    df = frame(rows, caps)
    single = method == "capability-only"
    expected, short = reference_select(rows, caps, N, threshold, seed, single_bin=single, rank=rank)
    if not expected:  # nothing qualifies anywhere: an error naming the rule, never an empty result
        assert not any(qualifies(rows, r, c, threshold, rank) for r in rows for c in caps)
        with pytest.raises(SelectionInputError, match="nothing to select"):
            select(df, [N], capabilities=caps, threshold=threshold, seed=seed, taxonomy=TAX, method=method, rank=rank)
        return None
    sel = select(df, [N], capabilities=caps, threshold=threshold, seed=seed, taxonomy=TAX, method=method, rank=rank)[
        str(N)
    ]
    got = picks(sel)
    if single:
        expected = [(i, c, None) for i, c, _ in expected]
    assert got == expected
    assert sel.short == short
    assert sel.selected == len(expected) and sel.requested == N
    assert sel.rank_mode == rank and set(sel.rules) == set(caps)
    return sel


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_engine_equals_reference(case):
    check_against_reference(*case)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_engine_equals_reference_with_tiny_chunks(case):
    """Chunks of one force every partial-sort extension path (boundaries, ties across chunks)."""
    old = Engine.min_chunk
    Engine.min_chunk = 1
    try:
        check_against_reference(*case)
    finally:
        Engine.min_chunk = old


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(tables())
def test_engine_equals_reference_on_the_threaded_path(monkeypatch, case):
    """Large tables hash tie keys, fill the score matrix and count bins over two threads: the same result."""
    from mmssr_core.selection import threads

    monkeypatch.setattr(threads, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    assert threads.worker_count(1) == 2
    check_against_reference(*case)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_capability_only_equals_reference_single_bin(case):
    check_against_reference(*case, method="capability-only")


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.sampled_from(["float", "integral", "paper"]), st.integers(1, 3))
def test_engine_equals_reference_on_larger_tables(seed, kind, n_caps):
    """Bins of hundreds of samples: the partial sorts, their extensions and deep cursors are used."""
    rng = random.Random(seed)
    caps = CAPS[:n_caps]
    rows = []
    for i in range(1500):
        row = {
            "id": f"r{i}",
            "source": rng.choice("ab"),
            "styles": rng.sample(["yes/no", "multi-choice", "comparison"], rng.randint(1, 2)),
        }
        for c in caps:
            v = rng.randint(0, 5) if kind == "integral" else rng.random() * 5
            row[c] = None if rng.random() < 0.05 else float(v)
            if kind == "paper":  # integers with massive ties, expected scores near them (a few exactly equal)
                row[c + "__argmax"] = None if rng.random() < 0.05 else rng.choice([0, 0, 1, 2, 3, 4, 5])
                row[c] = None if rng.random() < 0.05 else rng.choice([round(v, 2), 2.5, math.nextafter(2.5, 3)])
        rows.append(row)
    N = rng.randint(300, 1400)
    check_against_reference(rows, caps, N, rng.choice([0.0, 1.0]), seed % 3)


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(tables())
def test_properties(case):
    rows, caps, N, threshold, seed, rank = case
    df = frame(rows, caps)
    kw = dict(capabilities=caps, threshold=threshold, seed=seed, taxonomy=TAX, rank=rank)
    if not any(qualifies(rows, r, c, threshold, rank) for r in rows for c in caps):
        with pytest.raises(SelectionInputError, match="nothing to select"):
            select(df, [N], **kw)
        return
    sel = select(df, [N], **kw)[str(N)]
    f = sel.frame
    # no duplicates; ranks 1..k
    assert f.select(pl.struct("source", "id").n_unique()).item() == f.height
    assert f["rank"].to_list() == list(range(1, f.height + 1))
    # every pick qualifies for the capability that picked it, and its bin is one of its labels
    by_key = {(r["source"], r["id"]): r for r in rows}
    for r in f.iter_rows(named=True):
        row = by_key[(r["source"], r["id"])]
        assert qualifies(rows, row, r["picked_by"], threshold, rank)
        styles = [s.strip() for s in row["styles"] if s and s.strip()]
        assert r["bin"] in ([f"{s}+{row['source']}" for s in styles] or [f"unstyled+{row['source']}"])
    # exact size whenever enough samples qualify for some capability
    eligible = sum(1 for r in rows if any(qualifies(rows, r, c, threshold, rank) for c in caps))
    assert sel.selected == min(N, eligible)
    assert sel.short == (eligible < N)
    # determinism, and independence of the input row order
    again = select(df, [N], **kw)[str(N)]
    assert again.frame.equals(f)
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=seed)
    other = select(shuffled, [N], **kw)[str(N)]
    assert other.frame.equals(f)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 200), st.integers(0, 1000))
def test_first_round_shares_within_one(n_caps, N, seed):
    """One bin and plenty of candidates: round 1 gives every capability N // C, in capability order;
    the remainder goes one by one, so the per-capability counts differ by at most one."""
    rng = random.Random(seed)
    caps = rng.sample(CAPS, n_caps)
    rows = [
        {"id": f"s{i}", "source": "x", "styles": ["yes/no"], **{c: rng.random() for c in caps}}
        for i in range(N + 10 * n_caps)
    ]
    sel = run(rows, N, caps=caps, seed=seed)
    counts = list(sel.per_capability.values())
    assert sel.selected == N and max(counts) - min(counts) <= 1
    share = N // n_caps
    pb = sel.frame["picked_by"].to_list()
    if share:
        assert pb[: share * n_caps] == [c for c in caps for _ in range(share)]
    assert pb[share * n_caps :] == caps[: N - share * n_caps]


def test_several_budgets_share_one_call_and_match_separate_calls():
    rng = random.Random(3)
    rows = [
        {
            "id": f"s{i}",
            "source": rng.choice("abc"),
            "styles": rng.sample(["yes/no", "multi-choice", "comparison", "coordinate"], rng.randint(1, 3)),
            **{c: float(rng.randint(0, 5)) for c in CAPS},
        }
        for i in range(3000)
    ]
    df = frame(rows)
    together = select(df, ["5%", 0.1, 600, "0.3"], taxonomy=TAX)
    assert list(together) == ["5%", "0.1", "600", "0.3"]
    assert [s.requested for s in together.values()] == [150, 300, 600, 900]
    for key, sel in together.items():
        alone = select(df, [key], taxonomy=TAX)[key]
        assert alone.frame.equals(sel.frame)
        assert sel.budget == key and sel.method == "mmssr"


# ---------------------------------------------------------------------------------------------
# tie key, budgets, validation
# ---------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=30), st.integers(0, 2**64 - 1))
def test_tie_keys_match_the_definition(ids, seed):
    got = tie_keys(pl.Series(ids, dtype=pl.Utf8), seed)
    assert [int(v) for v in got] == [tie_key(i, seed) for i in ids]


def test_tie_keys_on_a_sliced_series():
    s = pl.Series([f"id{i}" * (i % 5) for i in range(100)])
    assert [int(v) for v in tie_keys(s.slice(37, 20), 3)] == [tie_key(i, 3) for i in s.slice(37, 20).to_list()]


@pytest.mark.parametrize(
    "budget,pool,expected",
    [
        (0.05, 2_600_000, 130_000),
        ("5%", 2_600_000, 130_000),
        ("0.29", 100, 29),
        (0.29, 100, 29),
        (1000, 5000, 1000),
        ("1000", 5000, 1000),
        (1.0, 10, 1),
        ("12.5%", 8, 1),
        (0.999, 1000, 999),
        (10, 10, 10),
        ("5000.0", 9000, 5000),
        ("0.1", 10, 1),
        ("10%", 50, 5),
        (np.int64(7), 10, 7),
    ],
)
def test_parse_budget(budget, pool, expected):
    assert parse_budget(budget).size(pool) == expected


@pytest.mark.parametrize(
    "budget,msg",
    [
        (0, "positive"),
        (-3, "positive"),
        ("-0.1", "not a budget"),
        ("0", "positive"),
        ("0.0", "positive"),
        ("abc", "not a budget"),
        (2.5, "neither"),
        ("2.5", "neither"),
        ("100%", "below 100%"),
        ("0%", "above 0%"),
        (True, "not a number"),
        ("nan", "not a budget"),
        (float("nan"), "finite"),
        ("1e1", "not a budget"),
        ("1e2", "not a budget"),
        ("1_0", "not a budget"),
        ("+5", "not a budget"),
        (" 5", "not a budget"),
        ("5 %", "not a budget"),
        ("٥", "not a budget"),
        (".5", "not a budget"),
        ("", "not a budget"),
        (None, "not a number"),
    ],
)
def test_parse_budget_errors(budget, msg):
    """Strict syntax: only digits, one decimal point and a trailing %, so the typed budget is a sane file name."""
    with pytest.raises(SelectionInputError, match=msg):
        parse_budget(budget)


def test_budget_sizes_and_keys():
    assert (
        parse_budget(0.29).key == "0.29" and parse_budget("10%").key == "10%" and parse_budget(1e-05).key == "0.00001"
    )
    assert parse_budget("0.29").fraction == Decimal("0.29") and parse_budget("500").count == 500
    assert parse_budget("10%").value == 0.1 and parse_budget(500.0).value == 500
    with pytest.raises(SelectionInputError, match="selects 0 of 10"):
        parse_budget(0.01).size(10)
    rows = [{"id": f"s{i}", "source": "x", "styles": ["yes/no"], "ocr": 1.0} for i in range(10)]
    with pytest.raises(SelectionInputError, match="asks for 11 samples but the scores table has only 10 rows"):
        run(rows, 11, caps=["ocr"])


def good_rows(n=4):
    return [{"id": f"s{i}", "source": "x", "styles": ["yes/no"], "ocr": (1.0 + i) % 5, "math": 2.0} for i in range(n)]


def test_validation_errors():
    df = frame(good_rows(), ["ocr", "math"])
    with pytest.raises(SelectionInputError, match="styles"):
        validate_scores(df.drop("styles"), TAX)
    with pytest.raises(SelectionInputError, match="id, source"):
        validate_scores(df.drop("id", "source"), TAX)
    with pytest.raises(SelectionInputError, match="unknown capabilities"):
        validate_scores(df, TAX, ["ocr", "nope"])
    with pytest.raises(SelectionInputError, match="no column for capability chart"):
        validate_scores(df, TAX, ["ocr", "chart"])
    with pytest.raises(SelectionInputError, match="not numeric"):
        validate_scores(df.with_columns(pl.col("ocr").cast(pl.Utf8)), TAX)
    with pytest.raises(SelectionInputError, match="null id"):
        validate_scores(
            df.with_columns(pl.when(pl.col("id") == "s1").then(None).otherwise(pl.col("id")).alias("id")), TAX
        )
    with pytest.raises(SelectionInputError, match="no capability column"):
        validate_scores(df.drop("ocr", "math"), TAX)
    with pytest.raises(SelectionInputError, match="expected list"):
        validate_scores(df.with_columns(pl.lit(3).alias("styles")), TAX)
    with pytest.raises(SelectionInputError, match="unknown method"):
        select(df, [1], method="best", taxonomy=TAX)
    with pytest.raises(SelectionInputError, match="only 4"):
        select(df, [5], taxonomy=TAX)
    with pytest.raises(SelectionInputError, match="unknown rank mode 'best'"):
        select(df, [1], rank="best", taxonomy=TAX)
    with pytest.raises(SelectionInputError, match="rank 'expected' needs an expected score column 'ocr'"):
        select(df.drop("ocr").with_columns(pl.lit(1, pl.Int8).alias("ocr__argmax")), [1], rank="expected", taxonomy=TAX)


def test_duplicate_ids_are_named():
    rows = good_rows(3) * 3 + good_rows(9)[3:]
    rows += [dict(r, id=f"d{i}") for i, r in enumerate(good_rows(4))] * 2
    with pytest.raises(SelectionInputError) as exc:
        validate_scores(frame(rows, ["ocr", "math"]), TAX)
    msg = str(exc.value)
    assert "duplicate ids" in msg and "'s0' (source 'x')" in msg and "and 2 more" in msg


def test_validation_report_and_warnings():
    rows = good_rows(6)
    rows[0]["ocr"] = float("nan")
    rows[1]["ocr"] = float("nan")
    rows[2]["math"] = float("nan")
    rows[4]["math"] = None
    rows[3]["styles"] = ["yes/no", "free text style", " yes/no "]
    rows[4]["styles"] = ["another one"]
    rows[5]["styles"] = None
    clean, report = validate_scores(frame(rows, ["ocr", "math"]), TAX)
    assert report["nonfinite"] == {"ocr": 2, "math": 1}
    assert report["missing_scores"] == {"ocr": 2, "math": 2}
    assert clean["ocr"].null_count() == 2 and clean["math"].null_count() == 2
    assert report["rank"] == "integer" and report["basis"] == {"ocr": "float", "math": "float"}
    assert report["unknown_style_rows"] == 2
    assert report["unknown_styles"] == ["another one", "free text style"]
    assert report["unstyled_rows"] == 1
    assert report["capabilities"] == ["ocr", "math"]
    text = " ".join(report["warnings"])
    assert "3 NaN score(s) treated as missing (ocr: 2, math: 1)" in text and "2 sample(s) carry styles outside" in text
    assert "chart, count" in text  # taxonomy capabilities without a column


def test_styles_as_comma_separated_text_and_integer_scores():
    df = pl.DataFrame(
        {
            "id": [1, 2, 3],
            "source": ["x", "x", "y"],
            "styles": ["yes/no, multi-choice", "multi-choice", ""],
            "ocr": [3, 2, 1],
        }
    )
    sel = select(df, [3], capabilities=["ocr"], taxonomy=TAX)["3"]
    assert sel.frame["id"].dtype == pl.Utf8
    assert set(sel.frame["bin"].to_list()) == {"yes/no+x", "multi-choice+x", "unstyled+y"}


def test_large_integer_score_table_matches_itself_across_row_orders():
    """A bigger table with integer scores (massive ties): shuffled input gives the same selection."""
    rng = np.random.default_rng(0)
    n = 20_000
    df = pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "source": rng.choice(["a", "b", "c", "d"], n),
            "styles": [["yes/no", "comparison"][: 1 + i % 2] for i in range(n)],
            **{c: rng.integers(0, 6, n).astype(float) for c in CAPS},
        }
    )
    a = select(df, ["30%", "5%"], taxonomy=TAX)
    b = select(df.sample(fraction=1.0, shuffle=True, seed=1), ["30%", "5%"], taxonomy=TAX)
    for k in a:
        assert a[k].frame.equals(b[k].frame)
        assert a[k].selected == a[k].requested


def test_chunked_tables_select_the_same_as_contiguous_ones():
    """Parquet files read in row groups give chunked columns; tie scores are read from the chunks in place."""
    rows = sparse_table(900, seed=2)
    for r in rows[::3]:  # equal integers and expected scores one ulp apart: the exact expected score decides
        r["chart__argmax"], r["chart"] = 3, NEAR_TIES[rows.index(r) % 2 + 2]
    df = frame(rows, CAPS)
    chunked = pl.concat([df[:250], df[250:251], df[251:700], df[700:]], rechunk=False)
    assert chunked["chart"].n_chunks() == 4
    a = select(df, ["30%", 50], taxonomy=TAX)
    b = select(chunked, ["30%", 50], taxonomy=TAX)
    for k in a:
        assert a[k].frame.equals(b[k].frame)
    check_against_reference(rows, CAPS, 270, 0.0, 0)
