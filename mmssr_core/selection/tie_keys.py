"""The seeded tie key: the last word on the order of samples whose scores are equal.

Why a hash of the id and not the row order: the result must not depend on how the scores table happens
to be sorted, must not favour any source, and must be the same on every machine and library version
(so polars' own hash, which may change between releases, is not used). The seed gives a different, still
reproducible, order of ties.
"""

from __future__ import annotations

import numpy as np
import polars as pl

GOLDEN = 0x9E3779B97F4A7C15
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)


def mix64(z: np.ndarray, tmp: np.ndarray | None = None) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (wrapping arithmetic); returns z."""
    if tmp is None or tmp.shape != z.shape:
        tmp = np.empty_like(z)
    with np.errstate(over="ignore"):
        np.right_shift(z, np.uint64(30), out=tmp)
        z ^= tmp
        z *= _C1
        np.right_shift(z, np.uint64(27), out=tmp)
        z ^= tmp
        z *= _C2
        np.right_shift(z, np.uint64(31), out=tmp)
        z ^= tmp
    return z


def seed_words(seed: int) -> tuple[np.uint64, np.uint64]:
    """The two 64-bit words a seed contributes to every key."""
    s = np.array([seed & 0xFFFFFFFFFFFFFFFF, (seed * 0x632BE59BD9B4E019 + 1) & 0xFFFFFFFFFFFFFFFF], np.uint64)
    mix64(s)
    return s[0], s[1]


def tie_keys(ids: pl.Series | list[str], seed: int = 0) -> np.ndarray:
    """A seeded 64-bit hash of each id's UTF-8 bytes, the same on every platform and library version.

    Definition (also written out one string at a time in tests/selection_reference.py): split the
    bytes into little-endian 8-byte words w_1..w_m (the last zero-padded; an empty id is one zero word);
    h = mix(sum_j mix(w_j ^ (s1 + j * GOLDEN)) ^ mix(len + s2)) in wrapping uint64 arithmetic, mix being
    splitmix64's finaliser and (s1, s2) derived from the seed.
    """
    if not isinstance(ids, pl.Series):
        ids = pl.Series(ids, dtype=pl.Utf8)
    if len(ids) == 0:
        return np.zeros(0, np.uint64)
    words, start, length = _byte_words(ids)
    s1, s2 = seed_words(int(seed))
    acc = _sum_of_mixed_words(words, start, length, s1)
    lw = length.astype(np.uint64)
    with np.errstate(over="ignore"):
        lw += s2
    acc ^= mix64(lw)
    return mix64(acc)


def _byte_words(ids: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(words, start, length): words[q] is the little-endian uint64 starting at byte q of all ids'
    concatenated UTF-8 bytes (zero-padded at the end); id i spans bytes start[i]:start[i] + length[i]."""
    import pyarrow as pa

    arr = ids.cast(pl.Utf8).to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    n = len(arr)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, np.int64)[arr.offset : arr.offset + n + 1]
    base, end = int(offsets[0]), int(offsets[-1])
    buf = np.zeros(end - base + 8, np.uint8)
    if end > base:
        buf[: end - base] = np.frombuffer(data_buf, np.uint8)[base:end]
    # every byte position seen as the start of a little-endian uint64 (unaligned)
    words = np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    return words, offsets[:-1] - base, offsets[1:] - offsets[:-1]


def _sum_of_mixed_words(words: np.ndarray, start: np.ndarray, length: np.ndarray, s1: np.uint64) -> np.ndarray:
    """sum_j mix(w_j ^ (s1 + j * GOLDEN)) per id, word position by word position (long ids only loop longer)."""
    masks = np.array([(1 << (8 * r)) - 1 for r in range(8)], np.uint64)
    acc = np.zeros(start.size, np.uint64)
    rows = None  # None: all rows
    j = 0
    with np.errstate(over="ignore"):
        while True:
            q = start + 8 * j if rows is None else start[rows] + 8 * j
            rem = length - 8 * j if rows is None else length[rows] - 8 * j
            w = words[q]
            part = np.flatnonzero(rem < 8)
            if part.size:
                w[part] &= masks[rem[part]]
            w ^= s1 + np.uint64(j + 1) * np.uint64(GOLDEN)
            mix64(w)
            if rows is None:
                acc += w
            else:
                acc[rows] += w
            j += 1
            rows = np.flatnonzero(length > 8 * j)
            if rows.size == 0:
                return acc


def unique_tie_keys(keys: np.ndarray, ids: pl.Series, sources: pl.Series) -> tuple[np.ndarray, pl.DataFrame]:
    """Make tie keys unique and find duplicate (source, id) pairs, with one sort of the keys.

    Equal hashes come from the same id in two sources (ids are unique per source only) or from a
    64-bit collision; then the keys are replaced by ranks of (hash, source, id), which orders those
    rows by source and keeps every other pair of rows in hash order. Returns (keys, duplicate pairs).
    """
    s = np.sort(keys)
    eq = s[1:] == s[:-1]
    if not eq.any():
        return keys, pl.DataFrame(schema={"source": pl.Utf8, "id": pl.Utf8})
    rows = np.flatnonzero(np.isin(keys, s[1:][eq]))
    sub = pl.DataFrame({"source": sources.gather(pl.Series(rows)), "id": ids.gather(pl.Series(rows))})
    dup = sub.filter(pl.struct("source", "id").is_duplicated()).unique(maintain_order=True)
    if dup.height:
        return keys, dup
    order = (pl.DataFrame({"h": keys, "source": sources, "id": ids}).with_row_index("row").sort(["h", "source", "id"]))[
        "row"
    ].to_numpy()
    ranks = np.empty(keys.size, np.uint64)
    ranks[order] = np.arange(keys.size, dtype=np.uint64)
    return ranks, dup
