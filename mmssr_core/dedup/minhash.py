"""MinHash signatures and LSH band keys: near-duplicate text candidates without comparing all pairs.

datasketch computes the signatures and chooses the banding (b bands of r rows) that best separates
pairs above the threshold from pairs below it. Instead of datasketch's in-memory index (a dict entry
per band per sample, gigabytes at millions of samples), each band's key is kept as one uint64 column:
samples sharing a key in any band are candidates, found by a group-by per band.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

NUM_PERM = 128
SEED = 1
# false-positive vs false-negative weights of the banding choice: candidates are verified exactly, so
# a missed pair costs more than an extra comparison
RECALL_WEIGHTS = (0.1, 0.9)
_MULT = np.random.default_rng(20250317).integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) | np.uint64(1)


@lru_cache(maxsize=None)
def lsh_shape(threshold: float) -> tuple[int, int]:
    """(bands, rows per band) that datasketch picks for `threshold` with NUM_PERM permutations."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, weights=RECALL_WEIGHTS)
    return int(lsh.b), int(lsh.r)


def signatures(shingle_lists: list[list[bytes]]) -> np.ndarray:
    """(n, NUM_PERM) uint64 MinHash signatures; an empty shingle list gives an all-max row."""
    from datasketch import MinHash

    out = np.empty((len(shingle_lists), NUM_PERM), np.uint64)
    for i, m in enumerate(MinHash.generator(shingle_lists, num_perm=NUM_PERM, seed=SEED)):
        out[i] = m.hashvalues
    return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: a hash of each band's `rows` signature values (equal bands, equal keys)."""
    n = sig.shape[0]
    out = np.empty((n, bands), np.uint64)
    with np.errstate(over="ignore"):
        for i in range(bands):
            part = sig[:, i * rows : (i + 1) * rows] * _MULT[i * rows : (i + 1) * rows]
            out[:, i] = np.bitwise_xor.reduce(part, axis=1) ^ np.uint64(i)
    return out
