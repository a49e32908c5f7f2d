"""Pass two: load the candidates' shingles and image hashes, confirm near pairs exactly.

The candidates are held compactly (each sample's shingle hashes as a sorted slice of one uint64 array,
its image hashes likewise), so memory stays small even when a large share of the pool is a candidate.
Within a candidate list, members are compared with a few "heads" (the first members that matched no
earlier head), so a list of k similar samples costs about k comparisons, not k^2; the number of heads
is capped, which bounds the cost of a list whose members resemble each other only by chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import polars as pl

from mmssr_core.dedup.config import DedupConfig
from mmssr_core.dedup.text import normalised_text, shingles

MAX_HEADS = 8


@dataclass
class Candidates:
    rows: np.ndarray  # sorted row numbers
    text_offsets: np.ndarray  # shingle hashes of rows[i]: text[text_offsets[i]:text_offsets[i + 1]]
    text: np.ndarray
    image_offsets: np.ndarray
    images: np.ndarray

    def _at(self, row: int) -> int:
        return int(np.searchsorted(self.rows, row))

    def shingle_hashes(self, row: int) -> np.ndarray:
        i = self._at(row)
        return self.text[self.text_offsets[i] : self.text_offsets[i + 1]]

    def image_hashes(self, row: int) -> np.ndarray:
        i = self._at(row)
        return self.images[self.image_offsets[i] : self.image_offsets[i + 1]]


def load_candidates(open_batches: Callable[[], Iterable[pl.DataFrame]], rows: np.ndarray) -> Candidates:
    """The shingle hashes (sorted, distinct) and image hashes of the given row numbers."""
    wanted = np.unique(rows.astype(np.int64))
    texts: list[np.ndarray] = []
    images: list[np.ndarray] = []
    offset = 0
    for batch in open_batches():
        lo, hi = np.searchsorted(wanted, [offset, offset + batch.height])
        if hi > lo:
            picked = batch[(wanted[lo:hi] - offset).tolist()].select(normalised_text(), "image_phashes")
            for text, ph in zip(picked["_text"].to_list(), picked["image_phashes"].to_list()):
                # Python's hash of the shingle bytes: only compared within this process
                texts.append(np.unique(np.fromiter((hash(s) for s in shingles(text)), np.int64)).view(np.uint64))
                images.append(np.asarray(ph or [], np.uint64))
        offset += batch.height

    def flat(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.zeros(len(parts) + 1, np.int64)
        offsets[1:] = np.cumsum([p.size for p in parts])
        return offsets, (np.concatenate(parts) if parts else np.zeros(0, np.uint64))

    t_off, t_flat = flat(texts)
    i_off, i_flat = flat(images)
    return Candidates(wanted, t_off, t_flat, i_off, i_flat)


def is_near(data: Candidates, a: int, b: int, config: DedupConfig) -> bool:
    pa, pb = data.image_hashes(a), data.image_hashes(b)
    if pa.size != pb.size:
        return False
    if pa.size and any(bin(int(x)).count("1") > config.image_distance for x in np.bitwise_xor(pa, pb)):
        return False
    sa, sb = data.shingle_hashes(a), data.shingle_hashes(b)
    inter = np.intersect1d(sa, sb, assume_unique=True).size
    union = sa.size + sb.size - inter
    return (inter / union if union else 1.0) >= config.text_threshold


def near_edges(buckets: pl.DataFrame, data: Candidates, config: DedupConfig) -> tuple[np.ndarray, int]:
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
                    verdicts[pair] = is_near(data, h, r, config)
                    if verdicts[pair]:
                        edges.append(pair)
                if verdicts[pair]:
                    matched = True
                    break
            if not matched and len(heads) < MAX_HEADS:
                heads.append(r)
    return np.asarray(edges, np.int64).reshape(-1, 2), len(verdicts)
