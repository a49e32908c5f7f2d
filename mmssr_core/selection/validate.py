"""Checking a scores table before selection, and what that check computes for the engine.

Why errors and not silent fixes: a selection is a training set; a table with the wrong columns, duplicate
ids or scores on another scale would give a subset that looks fine and means something else. Problems that
do not change the meaning (a NaN score, a style outside the style set) are kept as warnings with counts.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import polars as pl

from mmssr_core.schema import argmax_column
from mmssr_core.selection.codes import encode
from mmssr_core.selection.errors import SelectionInputError
from mmssr_core.selection.rules import DEFAULT_RANK, SCORE_RANGE, CapabilityRule, capability_rules
from mmssr_core.selection.threads import worker_count
from mmssr_core.selection.tie_keys import tie_keys, unique_tie_keys
from mmssr_core.taxonomy import Taxonomy, TaxonomyError, load_taxonomy

EXAMPLES = 5  # offending rows named in an error message


@dataclass
class PreparedTable:
    """A validated scores table and what selection reuses from the check (so nothing is done twice)."""

    clean: pl.DataFrame  # id, source (utf8), styles (list[utf8]), the score columns the rules use
    report: dict  # counts and warnings (see validate_scores)
    rules: list[CapabilityRule]  # one per capability, in the order given
    combo_codes: np.ndarray  # (n,) index into combos
    combos: list[tuple[str, ...]]  # normalised style lists (stripped, no empty, no repeats)
    source_codes: np.ndarray  # (n,) index into source_names (sorted)
    source_names: list[str]
    tie_keys: np.ndarray  # (n,) unique tie keys for the seed

    @property
    def capabilities(self) -> list[str]:
        return [r.key for r in self.rules]


def normalise_styles(styles: list | None) -> tuple[str, ...]:
    """Strip each style, drop empty and null entries and repeats (the first occurrence is kept)."""
    out: list[str] = []
    for s in styles or ():
        if s is None:
            continue
        s = s.strip()
        if s and s not in out:
            out.append(s)
    return tuple(out)


def validate_scores(
    scores: pl.DataFrame,
    taxonomy: Taxonomy | None = None,
    capabilities: list[str] | None = None,
    rank: str = DEFAULT_RANK,
) -> tuple[pl.DataFrame, dict]:
    """Check a scores table and return (clean frame, report).

    The clean frame has `id`, `source` (utf8), `styles` (list[utf8] as given; a utf8 column is split on
    commas) and the score columns the rules use (floats as Float64 with NaN turned to null, integers as Int8).
    Errors (SelectionInputError): missing id/source/styles, null ids or sources, unknown capability, a
    capability without a column, a non-numeric score column, scores outside 0..5 (infinities included) or
    a non-integral integer score (naming columns and rows), duplicate (source, id) pairs.
    Warnings (in the report; the rows are kept): NaN scores (missing), samples with an expected score but no
    integer score under the integer rule, styles outside the taxonomy, taxonomy capabilities absent from
    the table when no explicit list is given.
    """
    prepared = prepare_table(scores, taxonomy, capabilities, rank=rank)
    return prepared.clean, prepared.report


def prepare_table(scores, taxonomy=None, capabilities=None, seed: int = 0, rank: str = DEFAULT_RANK) -> PreparedTable:
    """validate_scores, plus the tie keys, source codes and style lists the engine needs."""
    taxonomy = taxonomy or load_taxonomy()
    styles_expr = _check_frame(scores)
    caps, warnings = _resolve_capabilities(scores, taxonomy, capabilities)
    rules = capability_rules(scores, caps, rank)
    columns = _score_columns(scores, rules)
    nan_counts, missing = _check_score_values(scores, rules, columns)
    clean = scores.select(
        pl.col("id").cast(pl.Utf8),
        pl.col("source").cast(pl.Utf8),
        styles_expr.alias("styles"),
        *[_clean_column(scores, c, integer=any(c == r.integer for r in rules)) for c in columns],
    )
    for col in ("id", "source"):
        if clean[col].null_count():
            raise SelectionInputError(f"{clean[col].null_count()} row(s) have a null {col}")
    if nan_counts:
        detail = ", ".join(f"{k}: {v}" for k, v in nan_counts.items())
        warnings.append(f"{sum(nan_counts.values())} NaN score(s) treated as missing ({detail})")
    warnings += _integer_gaps(clean, rules)
    tk, source_codes, source_names, raw_codes, raw_lists = _encode_rows(clean, seed)
    combo_codes, combos, style_report = _style_combos(raw_codes, raw_lists, taxonomy, warnings)
    report = {
        "rows": clean.height,
        "capabilities": caps,
        "rank": rank,
        "basis": {r.key: r.basis for r in rules},
        "nonfinite": nan_counts,
        "missing_scores": missing,
        **style_report,
        "sources": len(source_names),
        "warnings": warnings,
    }
    return PreparedTable(clean, report, rules, combo_codes, combos, source_codes, source_names, tk)


def _check_frame(scores) -> pl.Expr:
    """Required columns and their types; returns the expression that reads `styles` as list[utf8]."""
    if not isinstance(scores, pl.DataFrame):
        raise SelectionInputError(f"scores must be a polars DataFrame, got {type(scores).__name__}")
    missing = [c for c in ("id", "source", "styles") if c not in scores.columns]
    if missing:
        raise SelectionInputError(
            f"scores table lacks column(s) {', '.join(missing)}; it needs id, source, styles and one column "
            "per capability"
        )
    for col in ("id", "source"):
        dtype = scores.schema[col]
        if dtype not in (pl.Utf8, pl.Categorical) and not dtype.is_integer():
            raise SelectionInputError(f"column {col!r} is {dtype}, expected utf8")
    sdt = scores.schema["styles"]
    if sdt == pl.Utf8:
        return pl.col("styles").str.split(",")
    if (isinstance(sdt, pl.List) and sdt.inner in (pl.Utf8, pl.Null)) or sdt == pl.Null:
        return pl.col("styles").cast(pl.List(pl.Utf8))
    raise SelectionInputError(f"column 'styles' is {sdt}, expected list[utf8]")


def _has_scores(scores: pl.DataFrame, key: str) -> bool:
    return key in scores.columns or argmax_column(key) in scores.columns


def _resolve_capabilities(scores, taxonomy: Taxonomy, capabilities) -> tuple[list[str], list[str]]:
    """The capabilities to use, in order, and warnings about taxonomy capabilities without scores."""
    if capabilities is None:
        caps = [k for k in taxonomy.keys if _has_scores(scores, k)]
        if not caps:
            raise SelectionInputError(
                f"scores table has no capability column; expected some of: {', '.join(taxonomy.keys)}"
            )
        absent = [k for k in taxonomy.keys if not _has_scores(scores, k)]
        return caps, [f"capabilities without a score column, not used: {', '.join(absent)}"] if absent else []
    try:
        caps = taxonomy.resolve(list(capabilities))
    except TaxonomyError as exc:
        raise SelectionInputError(str(exc)) from None
    if not caps:
        raise SelectionInputError("no capability given")
    absent = [k for k in caps if not _has_scores(scores, k)]
    if absent:
        raise SelectionInputError(f"scores table has no column for capability {', '.join(absent)}")
    return caps, []


def _score_columns(scores: pl.DataFrame, rules: list[CapabilityRule]) -> list[str]:
    """The columns the rules read (each checked to be numeric), in capability order."""
    columns = []
    for r in rules:
        for c in (r.integer, r.expected):
            if c is not None and c not in columns:
                dtype = scores.schema[c]
                if not dtype.is_numeric():
                    raise SelectionInputError(f"score column {c!r} is {dtype}, not numeric")
                columns.append(c)
    return columns


def _check_score_values(scores, rules, columns) -> tuple[dict[str, int], dict[str, int]]:
    """Reject scores outside 0..5 (and non-integral integer scores); return (NaN counts, missing counts).

    One pass of reductions (min, max, NaN and null counts) per column; rows are only examined when a
    column's range is already known to be wrong.
    """
    integer_cols = {r.integer for r in rules if r.integer}
    exprs = []
    for c in columns:
        exprs += [
            pl.col(c).min().alias(f"min\x1f{c}"),
            pl.col(c).max().alias(f"max\x1f{c}"),
            pl.col(c).null_count().alias(f"null\x1f{c}"),
        ]
        if scores.schema[c].is_float():
            exprs.append(pl.col(c).is_nan().sum().alias(f"nan\x1f{c}"))
            if c in integer_cols:
                exprs.append(_bad_value(_as_float(scores, c), True).sum().alias(f"frac\x1f{c}"))
    stats = scores.select(exprs).row(0, named=True)
    lo, hi = SCORE_RANGE
    suspect = [c for c in columns if stats.get(f"frac\x1f{c}")] + [
        c
        for c in columns
        if stats[f"min\x1f{c}"] is not None and (stats[f"min\x1f{c}"] < lo or stats[f"max\x1f{c}"] > hi)
    ]
    if suspect:
        counts = scores.select([_bad_value(_as_float(scores, c), c in integer_cols).sum().alias(c) for c in columns])
        bad = {c: int(v) for c, v in counts.row(0, named=True).items() if v}
        raise SelectionInputError(_out_of_range_message(scores, bad, integer_cols))
    nan_counts = {c: int(stats[f"nan\x1f{c}"]) for c in columns if stats.get(f"nan\x1f{c}")}
    missing = {
        r.key: int(stats[f"null\x1f{r.eligibility_column}"]) + nan_counts.get(r.eligibility_column, 0) for r in rules
    }
    return nan_counts, missing


def _as_float(scores: pl.DataFrame, c: str) -> pl.Expr:
    """Column c as Float64 with NaN as null (so comparisons never see NaN, which polars orders last)."""
    col = pl.col(c).cast(pl.Float64)
    return col.fill_nan(None) if scores.schema[c].is_float() else col


def _bad_value(col: pl.Expr, integer: bool) -> pl.Expr:
    lo, hi = SCORE_RANGE
    bad = (col < lo) | (col > hi)
    if integer:
        bad = bad | (col != col.round(0))
    return bad.fill_null(False)


def _out_of_range_message(scores: pl.DataFrame, bad: dict[str, int], integer_cols: set[str]) -> str:
    lo, hi = SCORE_RANGE
    cols = ", ".join(f"{c} ({n} row{'s' * (n > 1)})" for c, n in bad.items())
    flags = [_bad_value(_as_float(scores, c), c in integer_cols).alias(f"bad\x1f{c}") for c in bad]
    flagged = scores.select("id", "source", *bad, *flags).filter(pl.any_horizontal(flags))
    examples = []
    for row in flagged.head(EXAMPLES).iter_rows(named=True):
        values = ", ".join(f"{c} = {row[c]!r}" for c in bad if row[f"bad\x1f{c}"])
        examples.append(f"{row['id']!r} (source {row['source']!r}): {values}")
    what = "integers " if set(bad) <= integer_cols else ""
    return (
        f"scores must be {what}within {lo:g}..{hi:g} (the scorer's scale): column(s) {cols} hold other values, "
        f"e.g. {'; '.join(examples)}"
    )


def _clean_column(scores: pl.DataFrame, c: str, integer: bool) -> pl.Expr:
    """Integer scores as Int8 (already checked to be whole numbers in 0..5), floats as Float64 without NaN."""
    if integer:
        col = pl.col(c) if scores.schema[c].is_integer() else _as_float(scores, c).round(0)
        return col.cast(pl.Int8).alias(c)
    return _as_float(scores, c).alias(c)


def _integer_gaps(clean: pl.DataFrame, rules: list[CapabilityRule]) -> list[str]:
    """A warning for samples that have an expected score but no integer score (they never qualify)."""
    pairs = [r for r in rules if r.basis == "integer" and r.expected]
    if not pairs:
        return []
    row = clean.select(
        [(pl.col(r.integer).is_null() & pl.col(r.expected).is_not_null()).sum().alias(r.key) for r in pairs]
    ).row(0, named=True)
    gaps = {k: int(v) for k, v in row.items() if v}
    if not gaps:
        return []
    detail = ", ".join(f"{k}: {v}" for k, v in gaps.items())
    return [
        f"{sum(gaps.values())} score(s) have an expected score but no integer score and never qualify "
        f"under the integer rule ({detail})"
    ]


def _encode_rows(clean: pl.DataFrame, seed: int):
    """Tie keys (hashed in a second thread on large tables), source codes (sorted by name) and style lists."""
    with ThreadPoolExecutor(1) if worker_count(clean.height) > 1 else nullcontext() as pool:
        keys = pool.submit(tie_keys, clean["id"], seed) if pool else None
        src_codes, src_values = encode(clean["source"])
        raw_codes, raw_lists = encode(clean["styles"])
        raw_tk = keys.result() if keys else tie_keys(clean["id"], seed)
    tk, dup = unique_tie_keys(raw_tk, clean["id"], clean["source"])
    if dup.height:
        shown = ", ".join(f"{r['id']!r} (source {r['source']!r})" for r in dup.head(5).iter_rows(named=True))
        more = f" and {dup.height - 5} more" if dup.height > 5 else ""
        raise SelectionInputError(f"duplicate ids in the scores table: {shown}{more}")
    order = sorted(range(len(src_values)), key=src_values.__getitem__)
    remap = np.empty(len(order), np.int64)
    remap[np.array(order, np.int64)] = np.arange(len(order))
    source_codes = remap[src_codes] if src_codes.size else src_codes
    return tk, source_codes, [src_values[i] for i in order], raw_codes, raw_lists


def _style_combos(raw_codes, raw_lists, taxonomy: Taxonomy, warnings: list[str]):
    """(combo code per row, normalised style lists, style counts for the report); warns on unknown styles."""
    normal = [normalise_styles(x) for x in raw_lists]
    combos = sorted(set(normal))
    cindex = {c: i for i, c in enumerate(combos)}
    combo_codes = np.array([cindex[c] for c in normal] or [0], np.int64)[raw_codes] if raw_codes.size else raw_codes
    per_combo = np.bincount(combo_codes, minlength=len(combos)) if combos else np.zeros(0, np.int64)
    known = set(taxonomy.styles)
    unknown = sorted({s for c in combos for s in c if s not in known})
    unknown_rows = int(sum(int(per_combo[i]) for i, c in enumerate(combos) if any(s not in known for s in c)))
    if unknown:
        shown = ", ".join(repr(s) for s in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        warnings.append(
            f"{unknown_rows} sample(s) carry styles outside the configured style set (kept as bins): {shown}"
        )
    unstyled = int(sum(int(per_combo[i]) for i, c in enumerate(combos) if not c))
    report = {"unknown_style_rows": unknown_rows, "unknown_styles": unknown, "unstyled_rows": unstyled}
    return combo_codes, combos, report
