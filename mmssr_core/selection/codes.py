"""Dense integer codes for columns with few distinct values (sources, style lists), without a sort.

Why: on millions of rows a `unique` + `join` (or a Python dict per row) costs seconds; a 64-bit hash,
a small lookup table and an exactness check cost a few passes over a numpy array.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from mmssr_core.selection.tie_keys import GOLDEN, mix64


def dense_codes(key: np.ndarray, mixed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of a uint64 array with (usually) few distinct values: (codes, one row per code).

    Finds the distinct values from a sample (adding whatever the sample missed), then maps every key
    through a small table indexed by its low bits (`mixed`: the keys are hashes, their low bits random);
    every mapping is checked for equality, so the codes are exact.
    """
    n = key.size
    if not mixed:
        key = mix64(key.copy())
    distinct = np.unique(key[:: max(1, n // 65536)])
    while True:
        codes = _lookup(key, distinct)
        miss = distinct[codes] != key
        if not miss.any():
            break
        distinct = np.union1d(distinct, np.unique(key[miss]))
    first_row = np.empty(distinct.size, np.int64)
    first_row[codes] = np.arange(n)
    return codes.astype(np.int64), first_row


def _lookup(key: np.ndarray, distinct: np.ndarray) -> np.ndarray:
    """Index into `distinct` of each key (exact only where the key is in `distinct`)."""
    for bits in range(max(int(distinct.size).bit_length() + 1, 4), 23):
        mask = np.uint64((1 << bits) - 1)
        low = (distinct & mask).astype(np.int64)
        if np.unique(low).size == distinct.size:
            table = np.zeros(1 << bits, np.int32)
            table[low] = np.arange(distinct.size, dtype=np.int32)
            return table[(key & mask).astype(np.intp)]
    codes = np.searchsorted(distinct, key)  # pragma: no cover - many distinct values: binary search
    codes[codes == distinct.size] = 0  # pragma: no cover
    return codes  # pragma: no cover


def list_hash(element_hash: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Combine per-element hashes into one hash per list (order-sensitive)."""
    n = lengths.size
    first = np.cumsum(lengths) - lengths
    acc = np.zeros(n, np.uint64)
    if element_hash.size:
        pos = np.arange(element_hash.size) - np.repeat(first, lengths)
        with np.errstate(over="ignore"):
            x = element_hash ^ ((pos.astype(np.uint64) + np.uint64(1)) * np.uint64(GOLDEN))
        mix64(x)
        nonempty = lengths > 0
        acc[nonempty] = np.add.reduceat(x, first[nonempty])
    acc ^= mix64(lengths.astype(np.uint64))
    return mix64(acc)


def encode(s: pl.Series) -> tuple[np.ndarray, list]:
    """(codes, values) with values[codes[i]] == s[i], for a utf8 or list[utf8] Series of few values."""
    if len(s) == 0:
        return np.zeros(0, np.int64), []
    if isinstance(s.dtype, pl.List):
        return _encode_lists(s)
    return _encode_strings(s)


def _encode_strings(s: pl.Series) -> tuple[np.ndarray, list]:
    """A 64-bit hash per string, checked by a second independent hash (an exact path on a collision)."""
    h = s.hash(0x5EED).to_numpy()
    codes, rep = dense_codes(h)
    h2 = s.hash(0xB0B).to_numpy()
    if not np.array_equal(h2, h2[rep][codes]):  # pragma: no cover - a 64-bit hash collision
        frame = pl.DataFrame({"v": s}).with_row_index("row")
        uniq = frame.unique("v", keep="first", maintain_order=True)
        lut = uniq.with_row_index("code").select("v", "code")
        codes = frame.join(lut, on="v", how="left", nulls_equal=True, maintain_order="left")["code"].to_numpy()
        return codes.astype(np.int64), uniq["v"].to_list()
    return codes, s.gather(pl.Series(rep)).to_list()


def _encode_lists(s: pl.Series) -> tuple[np.ndarray, list]:
    """Elements encoded as strings, then each list keyed exactly by its element codes (a base-(#values + 1)
    number; a hash when that would overflow 64 bits)."""
    lengths = s.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = s.explode(empty_as_null=False, keep_nulls=False)
    element_codes, element_values = encode(flat)
    base = len(element_values) + 1
    width = int(lengths.max())
    if width * math.log2(base) < 63:
        first = np.cumsum(lengths) - lengths
        pos = np.arange(element_codes.size) - np.repeat(first, lengths)
        x = (element_codes + 1) * np.power(base, pos, dtype=np.int64)
        key = np.zeros(lengths.size, np.int64)
        nonempty = lengths > 0
        if element_codes.size:
            key[nonempty] = np.add.reduceat(x, first[nonempty])
        codes, rep = dense_codes(key.view(np.uint64), mixed=False)
    else:  # pragma: no cover - very long style lists
        codes, rep = dense_codes(list_hash(mix64(element_codes.astype(np.uint64) + np.uint64(1)), lengths))
    return codes, s.gather(pl.Series(rep)).to_list()
