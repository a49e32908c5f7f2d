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


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def canonical_text(system: str | None, conversations: list[dict]) -> bytes:
    """Canonical UTF-8 JSON of the text; raises UnicodeEncodeError on lone surrogates (bad input)."""
    obj = {"system": system, "conversations": [[t["from"], t["value"]] for t in conversations]}
    return _ENCODER.encode(obj).encode("utf-8")


def content_hash(text: bytes, image_sha256s: list[str]) -> str:
    """sha256 over `canonical_text(...)` then each image's sha256, in order."""
    h = hashlib.sha256(text)
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
    """A compact 64-bit key for a string, valid within one process: the per-run id sets hold ints, not
    strings (Python's str hash; a collision would need ~4e9 ids for even odds)."""
    return hash(text)
