"""Perceptual image hashes: the image half of near-duplicate detection.

A re-encoded, resized or lightly recompressed copy of a picture has other bytes (so another content
hash) but nearly the same 64-bit DCT perceptual hash (imagehash's `phash`): the Hamming distance
between the two hashes stays small. Ingestion computes the hash once, from the image it already decodes
to check it, and stores it in the raw pool (`image_phashes`), so deduplication never reopens an image.
"""

from __future__ import annotations

import numpy as np

HASH_BITS = 64
_MIN_SIDE = 64  # shrink (box filter) to about this before hashing: phash looks at 32x32 anyway


def perceptual_hash(image) -> int | None:
    """The 64-bit phash of a decoded PIL image as an unsigned int, or None when it cannot be hashed.

    The image is first reduced with a box filter (cheap) so large images cost no more than small ones;
    phash then resizes to 32x32 itself, so the reduction changes the hash by a bit or two at most.
    """
    import imagehash

    try:
        gray = image.convert("L")
        factor = min(gray.size) // _MIN_SIDE
        if factor >= 2:
            gray = gray.reduce(factor)
        bits = imagehash.phash(gray).hash.flatten()
    except Exception:  # noqa: BLE001 - an odd mode or a degenerate image: no hash, exact dedup still applies
        return None
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of two uint64 arrays (element by element)."""
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def chunk_keys(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """(n, max_distance + 1) pigeonhole chunks of each hash, tagged with their position.

    Two hashes at most `max_distance` bits apart differ in at most that many chunks, so with
    `max_distance + 1` chunks at least one chunk is equal: grouping by (position, chunk) finds every
    such pair without comparing all pairs.
    """
    k = max_distance + 1
    bounds = np.linspace(0, HASH_BITS, k + 1).astype(np.int64)
    h = np.asarray(hashes, np.uint64)
    out = np.empty((h.shape[0], k), np.uint64)
    for j in range(k):
        width = int(bounds[j + 1] - bounds[j])
        mask = np.uint64((1 << width) - 1)
        out[:, j] = ((h >> np.uint64(bounds[j])) & mask) | (np.uint64(j) << np.uint64(56))
    return out
