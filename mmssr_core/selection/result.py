"""What a selection returns: one `Selection` per budget, with its frame and the facts a reader needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from mmssr_core.selection.engine import RunResult

OUTPUT_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Utf8,
    "source": pl.Utf8,
    "rank": pl.Int64,  # 1-based selection order
    "picked_by": pl.Utf8,  # the capability whose turn took the sample (null for methods without turns)
    "bin": pl.Utf8,  # the style+source label it was taken from (null for methods without bins)
}


@dataclass
class Selection:
    """One budget's result. `frame`: id, source, rank, picked_by, bin (OUTPUT_SCHEMA).

    rank_mode: "integer" (the paper's rule) or "expected" (the opt-in); rules: capability -> the
    eligibility rule actually applied ("integer > 0", "float > 0" for a table without integer scores, ...).
    requested = the budget as a count: of `pool_size` when given (the pool as ingested), else of the table's
    `table_rows`.
    """

    method: str
    budget: str
    requested: int
    selected: int
    frame: pl.DataFrame
    short: bool = False
    reason: str | None = None
    per_capability: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    rank_mode: str = "integer"
    rules: dict[str, str] = field(default_factory=dict)
    threshold: float = 0.0
    table_rows: int = 0
    pool_size: int = 0

    def summary(self) -> dict:
        return {
            "requested": self.requested,
            "selected": self.selected,
            "short": self.short,
            "reason": self.reason,
            "per_capability": dict(self.per_capability),
            "rank": self.rank_mode,
            "rules": dict(self.rules),
            "threshold": self.threshold,
            "table_rows": self.table_rows,
            "pool_size": self.pool_size,
        }


def result_frame(
    ids: pl.Series,
    res: RunResult,
    source_codes: np.ndarray,
    source_names: list[str],
    cap_names: list[str] | None,
    bin_names: list[str] | None,
) -> pl.DataFrame:
    """The output frame; `ids` must be a single chunk (gathers from chunked strings are ~20x slower)."""
    n = res.items.size

    def names(values: list[str] | None, codes: np.ndarray) -> pl.Series:
        if values is None:
            return pl.Series([None] * n, dtype=pl.Utf8)
        return pl.Series(values, dtype=pl.Utf8).gather(pl.Series(codes, dtype=pl.Int64))

    data = {
        "id": ids.gather(pl.Series(res.items, dtype=pl.Int64)),
        "source": names(source_names, source_codes[res.items]),
        "rank": pl.Series(np.arange(1, n + 1, dtype=np.int64)),
        "picked_by": names(cap_names, res.caps),
        "bin": names(bin_names, res.bins),
    }
    return pl.DataFrame(data, schema=OUTPUT_SCHEMA)
