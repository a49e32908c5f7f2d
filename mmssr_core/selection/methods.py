"""Every selection method as an engine: the mmSSR rule and the baselines (see mmssr_core.baselines).

A method is a choice of ranking keys (what qualifies and in which order) and of bins (style x source, or
one bin for methods without style balancing); the engine, the tie key and the output are shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmssr_core import baselines
from mmssr_core.selection.bins import BinLayout
from mmssr_core.selection.engine import Engine
from mmssr_core.selection.errors import SelectionInputError
from mmssr_core.selection.rules import CLASS_WIDTH, MISSING_EXPECTED, rank_key, tie_scores
from mmssr_core.selection.threads import parallel_map
from mmssr_core.selection.validate import PreparedTable

METHODS = ("mmssr",) + baselines.BASELINES


@dataclass
class MethodEngine:
    """An engine for one method, with the names its output columns use (None: the column stays null)."""

    engine: Engine
    picked_by: list[str] | None
    bins: list[str] | None


def engine_for(method: str, table: PreparedTable, threshold: float) -> MethodEngine:
    """The engine that runs `method` on a validated table."""
    n = table.clean.height
    caps = table.capabilities
    if method in ("mmssr", "style-only"):
        layout = BinLayout.from_table(table.combo_codes, table.combos, table.source_codes, table.source_names)
        if method == "style-only":
            engine = Engine(baselines.constant_scores(n)[None, :], ["style-only"], layout, table.tie_keys)
            return MethodEngine(engine, None, layout.labels)
        return MethodEngine(_capability_engine(table, layout, threshold), caps, layout.labels)
    layout = BinLayout.single(n)
    if method == "capability-only":
        return MethodEngine(_capability_engine(table, layout, threshold), caps, None)
    if method == "random":
        return MethodEngine(
            Engine(baselines.constant_scores(n)[None, :], ["random"], layout, table.tie_keys), None, None
        )
    if method == "mean":
        return MethodEngine(_mean_engine(table, layout, threshold), None, None)
    raise SelectionInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def _capability_engine(table: PreparedTable, layout: BinLayout, threshold: float) -> Engine:
    """One ranking per capability under its rule (rules.py), in the layout's internal order."""
    clean, rules = table.clean, table.rules
    keys = np.empty((len(rules), clean.height), np.float64)
    exact: list[np.ndarray | None] = [None] * len(rules)

    def fill(i: int) -> None:
        key, exact[i] = rank_key(clean, rules[i], threshold)
        if layout.internal_index is None:
            keys[i] = key
        else:
            keys[i][layout.internal_index] = key  # a scatter: far cheaper than gathering key[input_row]

    parallel_map(fill, list(range(len(rules))), clean.height)

    return Engine(
        keys,
        [r.key for r in rules],
        layout,
        table.tie_keys,
        [tie_scores(clean, r, x) for r, x in zip(rules, exact)],
        qualifies=_qualifies(table, threshold),
    )


def _mean_engine(table: PreparedTable, layout: BinLayout, threshold: float) -> Engine:
    """Top N by the mean score: mean integer first (ties: mean expected) when every rule is integer."""
    clean, rules = table.clean, table.rules
    t = float(threshold)
    expected = [r.expected for r in rules if r.expected]
    if any(r.basis != "integer" for r in rules):
        mean = baselines.mean_scores(clean, expected)
        key = np.where(mean > t, mean, -np.inf)
        return Engine(key[None, :], ["mean"], layout, table.tie_keys, qualifies=f"samples with a mean score > {t:g}")
    mean_integer = baselines.mean_scores(clean, [r.integer for r in rules])
    mean_expected = baselines.mean_scores(clean, expected) if expected else np.full(clean.height, -np.inf)
    inside = np.where(np.isfinite(mean_expected), mean_expected, MISSING_EXPECTED)
    # sums of integers are whole numbers: 8 * sum keeps the classes of equal means apart (see rules.py)
    key = np.where(mean_integer > t, CLASS_WIDTH * np.round(mean_integer * len(rules)) + inside, -np.inf)
    ties = [mean_expected.__getitem__ if expected else None]
    return Engine(
        key[None, :], ["mean"], layout, table.tie_keys, ties, qualifies=f"samples with a mean integer score > {t:g}"
    )


def _qualifies(table: PreparedTable, threshold: float) -> str:
    bases = sorted({r.basis for r in table.rules})
    if len(bases) == 1:
        return f"samples with {'an' if bases[0] in ('integer', 'expected') else 'a'} {bases[0]} score > {threshold:g}"
    return f"samples passing their capability's rule (score > {threshold:g})"
