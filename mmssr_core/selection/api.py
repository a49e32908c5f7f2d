"""`select`: one subset per budget from a scores table, every budget of a call from one set of rankings."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from mmssr_core.selection.budget import parse_budget
from mmssr_core.selection.errors import SelectionInputError
from mmssr_core.selection.methods import METHODS, MethodEngine, engine_for
from mmssr_core.selection.result import Selection, result_frame
from mmssr_core.selection.rules import DEFAULT_RANK, check_rank_mode, rule_summary
from mmssr_core.selection.validate import PreparedTable, prepare_table
from mmssr_core.taxonomy import Taxonomy

SCORE_FREE_METHODS = ("random", "style-only")  # the whole pool is eligible: scores and threshold unused


def select(
    scores: pl.DataFrame,
    budgets: list[float | int | str] | float | int | str,
    *,
    method: str = "mmssr",
    capabilities: list[str] | None = None,
    threshold: float = 0.0,
    seed: int = 0,
    taxonomy: Taxonomy | None = None,
    rank: str = DEFAULT_RANK,
    pool_size: int | None = None,
) -> dict[str, Selection]:
    """Select one subset per budget from a scores table; results keyed by the budget as typed.

    method: mmssr (the rule) or a baseline (random, mean, capability-only, style-only; see
    mmssr_core.baselines). rank: "integer" (default: the integer score decides eligibility and rank, the
    expected score breaks ties; float-only tables use their float) or "expected" (opt-in: rank and
    threshold on the expected score). pool_size: what a fractional budget is a fraction of (e.g. the pool
    as ingested, when the table was deduplicated); default the table's rows. A count is always a count.
    Raises SelectionInputError on bad input and when nothing at all qualifies (the reason per capability).
    """
    if method not in METHODS:
        raise SelectionInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check_rank_mode(rank)
    t = _threshold(threshold)
    parsed = [parse_budget(b) for b in ([budgets] if isinstance(budgets, (str, int, float)) else budgets)]
    if not parsed:
        raise SelectionInputError("no budget given")
    table = prepare_table(scores, taxonomy, capabilities, int(seed), rank)
    rows = table.clean.height
    if rows == 0:
        raise SelectionInputError("the scores table is empty")
    base = _pool_size(pool_size, rows)
    sizes = {b.key: _size(b, base, rows, pool_size is not None) for b in parsed}
    runner = engine_for(method, table, t)
    rules = {} if method in SCORE_FREE_METHODS else rule_summary(table.rules, t)
    facts = dict(method=method, rank_mode=rank, rules=rules, threshold=t, table_rows=rows, pool_size=base)
    return _run_budgets(runner, table, sizes, facts)


def _threshold(threshold) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise SelectionInputError(f"threshold {threshold!r} is not a number") from None
    if not math.isfinite(t):
        raise SelectionInputError(f"threshold {threshold!r} must be finite")
    return t


def _pool_size(pool_size, rows: int) -> int:
    if pool_size is None:
        return rows
    if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)) or pool_size < rows:
        raise SelectionInputError(
            f"pool_size {pool_size!r} must be a whole number of samples at least the table's {rows} rows"
        )
    return int(pool_size)


def _size(budget, base: int, rows: int, pool_given: bool) -> int:
    """The budget as a count. More than the table holds is an error, unless the caller said the table is part
    of a larger pool (pool_size): then the selection is short and says why."""
    n = budget.size(base)
    if n > rows and not pool_given:
        raise SelectionInputError(
            f"budget {budget.key!r} asks for {n} samples but the scores table has only {rows} rows"
        )
    return n


def _nothing_selectable(table: PreparedTable, t: float, method: str) -> SelectionInputError:
    """Nothing qualifying is an error, not an empty file: say why, per capability."""
    missing = table.report["missing_scores"]
    detail = "; ".join(
        f"{r.key}: {r.describe(t)} holds for none ({missing.get(r.key, 0)} of {table.clean.height} missing)"
        for r in table.rules
    )
    what = "the mean score" if method == "mean" else "any capability"
    return SelectionInputError(f"nothing to select: no sample qualifies for {what} ({detail})")


def _run_budgets(
    runner: MethodEngine, table: PreparedTable, sizes: dict[str, int], facts: dict
) -> dict[str, Selection]:
    ids = table.clean["id"].rechunk()
    runs = {}
    results: dict[str, Selection] = {}
    for key, n in sorted(sizes.items(), key=lambda kv: -kv[1]):  # largest first: it grows the rankings
        res = runs[n] = runs[n] if n in runs else runner.engine.run(n)
        if res.items.size == 0:  # the largest budget took nothing: no sample qualifies anywhere
            raise _nothing_selectable(table, facts["threshold"], facts["method"])
        frame = result_frame(ids, res, table.source_codes, table.source_names, runner.picked_by, runner.bins)
        per_cap: dict[str, int] = {}
        if runner.picked_by is not None:
            counts = np.bincount(res.caps, minlength=len(runner.picked_by))
            per_cap = {name: int(v) for name, v in zip(runner.picked_by, counts)}
        warnings = list(table.report["warnings"])
        reason = res.reason
        if n > table.clean.height:
            reason = (
                f"the scores table holds {table.clean.height} samples, fewer than the {n} asked for "
                f"(pool of {facts['pool_size']}); {reason}"
            )
        if reason:
            warnings.append(f"budget {key}: {reason}")
        results[key] = Selection(
            budget=key,
            requested=n,
            selected=int(res.items.size),
            frame=frame,
            short=res.short,
            reason=reason,
            per_capability=per_cap,
            warnings=warnings,
            **facts,
        )
    return {key: results[key] for key in sizes}
