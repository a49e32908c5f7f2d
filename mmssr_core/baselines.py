"""Baselines beside the mmSSR rule: how each one scores samples. Selection runs them through the same engine
(`mmssr_core.selection.select(..., method=)`).

Why the same engine: every method then shares the tie key (seeded hash of the id), the budget syntax,
the short-selection handling and the output columns, so reports compare methods and nothing else.

- `random`: the first N samples by the seeded tie key (a seeded shuffle, independent of row order).
  Scores and the threshold are not used; the whole pool is eligible.
- `mean`: top N by the mean of the chosen capabilities' scores, under the same rank mode as mmSSR: with
  integer scores, the mean integer score decides (> threshold to qualify) and the mean expected score
  orders equal means; otherwise the mean of the float scores. A missing score counts as 0 in a mean; a
  sample with no score at all never qualifies.
- `capability-only`: the mmSSR round-robin over capabilities without style balancing (each capability's
  share taken straight from the top of its ranking); `picked_by` is set, `bin` is null.
- `style-only`: the balanced take over the style+source bins on the whole pool, random order within a
  bin (the seeded tie key); scores and the threshold are not used; `bin` is set, `picked_by` is null.

This module only computes numbers; it imports nothing from the selection package (which imports it).
"""

from __future__ import annotations

import numpy as np
import polars as pl

BASELINES = ("random", "mean", "capability-only", "style-only")


def mean_scores(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """Mean over `columns` with missing scores counted as 0; -inf (never eligible) where all are missing."""
    mean = frame.select(
        pl.when(pl.any_horizontal([pl.col(k).is_not_null() for k in columns]))
        .then(pl.sum_horizontal([pl.col(k).cast(pl.Float64).fill_null(0.0) for k in columns]) / len(columns))
        .otherwise(None)
        .alias("mean")
    )["mean"]
    return mean.cast(pl.Float64).fill_null(-np.inf).to_numpy()


def constant_scores(n: int) -> np.ndarray:
    """The same score for every sample: the whole pool is eligible and the tie key alone orders it."""
    return np.ones(n)
