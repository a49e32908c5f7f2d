"""Baselines beside the mmSSR rule, through the same engine and interface (`select(..., method=)`).

Why the same engine: every method then shares the tie key (seeded hash of the id), the budget syntax,
the short-selection handling and the output columns, so reports compare methods and nothing else.

- `random`: the first N samples by the seeded tie key (a seeded shuffle, independent of row order).
  Scores and the threshold are not used; the whole pool is eligible.
- `mean`: top N by the mean of the chosen capabilities' scores, ties by the tie key; a missing score
  counts as 0 in the mean; a sample with no score at all, or with mean <= threshold, never qualifies.
- `capability-only`: the mmSSR round-robin over capabilities without style balancing (each capability's
  share taken straight from the top of its ranking); `picked_by` is set, `bin` is null.
- `style-only`: the balanced take over the style+source bins on the whole pool, random order within a
  bin (the seeded tie key); scores and the threshold are not used; `bin` is set, `picked_by` is null.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mmssr_core.selection import Engine, Layout, _Aux, score_matrix


def engine_for(
    method: str, clean: pl.DataFrame, caps: list[str], threshold: float, aux: _Aux
) -> tuple[Engine, list[str] | None, list[str] | None]:
    """The engine that runs `method` on a validated frame, and the names for picked_by / bin."""
    n = clean.height
    tk = aux.tk
    if method in ("mmssr", "style-only"):
        layout = Layout.from_aux(aux)
        names = layout.names
        if method == "mmssr":
            return Engine(score_matrix(clean, caps, layout), caps, layout, tk, threshold), caps, names
        return Engine(np.ones((1, n)), ["style-only"], layout, tk, 0.0), None, names
    layout = Layout.single(n)
    if method == "capability-only":
        return Engine(score_matrix(clean, caps), caps, layout, tk, threshold), caps, None
    if method == "random":
        return Engine(np.ones((1, n)), ["random"], layout, tk, 0.0), None, None
    if method == "mean":
        return Engine(mean_scores(clean, caps)[None, :], ["mean"], layout, tk, threshold), None, None
    raise ValueError(f"unknown method {method!r}")


def mean_scores(clean: pl.DataFrame, caps: list[str]) -> np.ndarray:
    """Mean over `caps` with missing scores counted as 0; -inf (never eligible) where all are missing."""
    mean = clean.select(
        pl.when(pl.any_horizontal([pl.col(k).is_not_null() for k in caps]))
        .then(pl.sum_horizontal([pl.col(k).fill_null(0.0) for k in caps]) / len(caps))
        .otherwise(None)
        .alias("mean")
    )["mean"]
    return mean.cast(pl.Float64).fill_null(-np.inf).to_numpy()
