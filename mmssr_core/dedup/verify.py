"""Pass two: load the candidates' shingle sets and image hashes, confirm near pairs exactly.

Within a candidate list, members are compared with a few "heads" (the first members that matched no
earlier head), so a list of k similar samples costs about k comparisons, not k^2; the number of heads
is capped, which bounds the cost of a list whose members resemble each other only by chance.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import polars as pl

from mmssr_core.dedup.config import DedupConfig
from mmssr_core.dedup.text import jaccard, normalised_text, shingles

MAX_HEADS = 8


def load_candidates(open_batches: Callable[[], Iterable[pl.DataFrame]], rows: np.ndarray) -> dict[int, tuple]:
    """row -> (shingle set, image hashes) for the given (sorted) row numbers."""
    wanted = np.unique(rows.astype(np.int64))
    out: dict[int, tuple] = {}
    offset = 0
    for batch in open_batches():
        lo, hi = np.searchsorted(wanted, [offset, offset + batch.height])
        if hi > lo:
            local = wanted[lo:hi] - offset
            picked = batch[local.tolist()].select(normalised_text(), "image_phashes")
            columns = zip(wanted[lo:hi].tolist(), picked["_text"].to_list(), picked["image_phashes"].to_list())
            for r, text, ph in columns:
                out[r] = (frozenset(shingles(text)), tuple(ph or ()))
        offset += batch.height
    return out


def _popcount(x: int) -> int:
    return bin(x).count("1")


def is_near(a: tuple, b: tuple, config: DedupConfig) -> bool:
    (sa, pa), (sb, pb) = a, b
    if len(pa) != len(pb):
        return False
    if any(_popcount(x ^ y) > config.image_distance for x, y in zip(pa, pb)):
        return False
    return jaccard(sa, sb) >= config.text_threshold


def near_edges(buckets: pl.DataFrame, data: dict[int, tuple], config: DedupConfig) -> tuple[np.ndarray, int]:
    """(edges as an (e, 2) array of rows, comparisons made) over every candidate list."""
    edges: list[tuple[int, int]] = []
    verdicts: dict[tuple[int, int], bool] = {}  # the same pair often shares several lists
    for rows in buckets["rows"].to_list():
        heads: list[int] = []
        for r in rows:
            matched = False
            for h in heads:
                pair = (h, r)
                if pair not in verdicts:
                    verdicts[pair] = is_near(data[h], data[r], config)
                    if verdicts[pair]:
                        edges.append(pair)
                if verdicts[pair]:
                    matched = True
                    break
            if not matched and len(heads) < MAX_HEADS:
                heads.append(r)
    return np.asarray(edges, np.int64).reshape(-1, 2), len(verdicts)
