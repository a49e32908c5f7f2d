"""Content hashes and derived ids.

The content hash covers what a trainer sees: the system prompt, the canonical turns and the bytes of
every image in order (as their sha256), so the same conversation about a re-encoded image is a different
sample while the same sample under two file names is a duplicate.
"""

from __future__ import annotations

import hashlib
import json

ID_PREFIX = "sha256:"
DERIVED_ID_HEX = 16


def canonical_text(system: str | None, conversations: list[dict]) -> bytes:
    obj = {"system": system, "conversations": [[t["from"], t["value"]] for t in conversations]}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8", "surrogatepass")


def content_hash(system: str | None, conversations: list[dict], image_sha256s: list[str]) -> str:
    h = hashlib.sha256(canonical_text(system, conversations))
    for digest in image_sha256s:
        h.update(b"\x00img:")
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


def derived_id(content_hash_hex: str) -> str:
    """The id of a sample that has none: stable across runs because it depends on content only."""
    return ID_PREFIX + content_hash_hex[:DERIVED_ID_HEX]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def short_key(text: str) -> int:
    """A compact 64-bit key for a string: the per-run id/hash sets hold ints, not strings."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
