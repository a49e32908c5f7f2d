"""Which score decides, per capability: eligibility (score > threshold) and the ranking key.

The paper's rule uses the integer score the scorer writes (`<key>__argmax`, the digit it would answer):
a sample qualifies for a capability when that integer is above the threshold, and candidates are ranked by
the integer, highest first; the expected score (`<key>`, a float) only orders samples with the same
integer, and the seeded id hash orders what is still equal. A table without integer scores (an external
scorer that writes floats only) is ranked and thresholded on its float. Ranking purely on the expected score
is an opt-in (`rank="expected"`): with threshold 0 it makes nearly every sample eligible everywhere, so
capabilities never run dry and keep taking samples their scorer rated 0.

Why one packed key: the engine's partial sorts work on one float64 per sample. For the integer rule the
key is 8 * integer + expected (expected is in 0..5, or -1 when missing), which keeps every integer class
apart and orders each class by the expected score. The sum can round two expected scores closer than
~1e-14 to the same key; the engine then consults the exact expected score (`tie_scores`) before the hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl

from mmssr_core.schema import argmax_column
from mmssr_core.selection.errors import SelectionInputError

RANK_MODES = ("integer", "expected")
DEFAULT_RANK = "integer"
SCORE_RANGE = (0.0, 5.0)
CLASS_WIDTH = 8.0  # > (max expected score) - (missing marker -1): integer classes never overlap
MISSING_EXPECTED = -1.0


@dataclass(frozen=True)
class CapabilityRule:
    """How one capability scores samples for selection.

    basis: "integer" (the paper's rule), "expected" (the opt-in rank on the expected score) or "float"
    (the table has no integer score for it: an external scorer's float). `integer` / `expected` name the
    columns used (expected: the float column; with the integer basis it only breaks ties).
    """

    key: str
    basis: str
    integer: str | None
    expected: str | None

    @property
    def eligibility_column(self) -> str:
        return self.integer if self.basis == "integer" else self.expected

    def describe(self, threshold: float) -> str:
        return f"{self.basis} > {threshold:g}"


def check_rank_mode(rank: str) -> str:
    if rank not in RANK_MODES:
        raise SelectionInputError(f"unknown rank mode {rank!r}; choose one of {', '.join(RANK_MODES)}")
    return rank


def capability_rules(scores: pl.DataFrame, caps: list[str], rank: str = DEFAULT_RANK) -> list[CapabilityRule]:
    """The rule of each capability for a scores table (or its clean frame).

    With rank "integer", a capability uses its integer column when the table has one holding at least one
    value; else its float column. With rank "expected", the float column. Raises when the needed column
    is absent.
    """
    check_rank_mode(rank)
    rules = []
    for k in caps:
        a = argmax_column(k)
        expected = k if k in scores.columns else None
        # an integer column without a value counts as absent, unless there is nothing else to rank on
        has_integer = a in scores.columns and (scores[a].null_count() < scores.height or expected is None)
        if rank == "integer" and has_integer:
            rules.append(CapabilityRule(k, "integer", a, expected))
        elif expected is None:
            need = "an expected score column" if rank == "expected" else "a score column"
            raise SelectionInputError(f"rank {rank!r} needs {need} {k!r}; the scores table has none")
        else:
            rules.append(CapabilityRule(k, "expected" if rank == "expected" else "float", None, expected))
    return rules


def rule_summary(rules: list[CapabilityRule], threshold: float) -> dict[str, str]:
    """capability -> "integer > 0" (what summaries, reports and metadata show)."""
    return {r.key: r.describe(threshold) for r in rules}


def eligible_expr(rule: CapabilityRule, threshold: float) -> pl.Expr:
    """True where a sample qualifies for the capability (missing and NaN never do): for reports."""
    col = pl.col(rule.eligibility_column).cast(pl.Float64)
    return (col.fill_nan(None) > float(threshold)).fill_null(False)


def rank_key(clean: pl.DataFrame, rule: CapabilityRule, threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
    """One capability's ranking key per input row (float64; higher ranks first; -inf = not eligible) and, for
    the integer rule with expected scores, where the packed key is exact (see PackedTieScores); else None.

    One polars pass (no numpy temporaries): the float score, or 8 * integer + expected (-1 when missing).
    """
    t = float(threshold)
    if rule.basis != "integer":
        score = pl.col(rule.expected).cast(pl.Float64)
        return clean.select(pl.when(score > t).then(score).otherwise(-np.inf).alias("key"))["key"].to_numpy(), None
    integer = pl.col(rule.integer)
    shifted = integer.cast(pl.Float64) * CLASS_WIDTH
    if rule.expected is None:
        key = pl.when(integer > t).then(shifted + MISSING_EXPECTED).otherwise(-np.inf)
        return clean.select(key.alias("key"))["key"].to_numpy(), None
    e = pl.col(rule.expected)
    key = pl.when(integer > t).then(shifted + e.fill_null(MISSING_EXPECTED)).otherwise(-np.inf)
    exact = e.is_null() | ((shifted + e) - shifted == e)
    out = clean.select(key.alias("key"), exact.alias("exact"))
    return out["key"].to_numpy(), out["exact"].to_numpy()


def tie_scores(
    clean: pl.DataFrame, rule: CapabilityRule, exact: np.ndarray | None
) -> Callable[[np.ndarray], np.ndarray | None] | None:
    """For the integer rule: a function giving the exact expected scores (-inf missing) of input rows that
    share a key, or None when their keys are exact (then their expected scores are equal too); None for
    rules whose key is the score itself. exact: from rank_key."""
    if rule.basis != "integer" or rule.expected is None:
        return None
    return PackedTieScores(ColumnReader(clean[rule.expected]), exact)


class ColumnReader:
    """Float values of a column at given rows (missing as -inf), reading its chunks in place.

    Why: a polars gather per call is slow for thousands of small reads, and a contiguous numpy copy of every
    capability's column would cost 8 bytes x rows x capabilities; chunks without nulls are numpy views.
    """

    def __init__(self, column: pl.Series):
        self._column = column
        self._chunks: list[np.ndarray] | None = None
        self._starts: np.ndarray | None = None

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self._chunks is None:
            self._chunks = [_column(c.to_frame(), c.name) for c in self._column.get_chunks()]
            self._starts = np.cumsum([0] + [c.size for c in self._chunks[:-1]])
        if len(self._chunks) == 1:
            return self._chunks[0][rows]
        out = np.empty(np.size(rows))
        for k in range(len(self._chunks) - 1, -1, -1):  # from the last chunk down: one comparison each
            start = self._starts[k]
            mine = rows >= start if k == len(self._chunks) - 1 else (rows >= start) & (rows < self._starts[k + 1])
            if mine.any():
                out[mine] = self._chunks[k][rows[mine] - start]
        return out


class PackedTieScores:
    """The expected scores behind the integer rule's packed keys, read only where packing lost something.

    8 * integer + expected is exact for most expected scores (any with fewer than ~48 significant bits, e.g.
    from float32 probabilities, and every missing one); samples whose keys are equal and exact have equal
    expected scores, so the column is only read when a run of equal keys holds an inexact one.
    """

    def __init__(self, read: "ColumnReader", exact: np.ndarray):
        self._read, self._exact = read, exact

    def __call__(self, rows: np.ndarray) -> np.ndarray | None:
        return None if self._exact[rows].all() else self._read(rows)


def _column(clean: pl.DataFrame, name: str) -> np.ndarray:
    """A score column as float64, missing as -inf (never above any threshold)."""
    s = clean[name]
    if s.dtype != pl.Float64:
        s = s.cast(pl.Float64)
    return (s.fill_null(-np.inf) if s.null_count() else s).to_numpy()
