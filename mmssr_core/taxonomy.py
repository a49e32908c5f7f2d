"""The capability and interaction-style vocabularies of mmSSR (docs/method.md, docs/configuration.md).

Kept in data, not code, so a team can add a capability (key + prompt phrase) in a config file and have
it flow through scoring, selection and reports without a code change.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("object_spatial_understanding", "object spatial understanding"),
    ("attribute_identification", "attribute identification"),
    ("logical_deduction", "logical deduction"),
    ("scene_understanding", "scene understanding"),
    ("fine_grained_recognition", "fine-grained recognition"),
    ("language_generation", "language generation"),
    ("in_context_learning", "in-context learning"),
    ("comparative_analysis", "comparative analysis"),
    ("activity_recognition", "activity recognition"),
    ("causal_reasoning", "causal reasoning"),
    ("humanities", "humanities"),
    ("stem_knowledge", "stem knowledge"),
    ("data_understanding", "data understanding"),
    ("optical_character_recognition", "optical character recognition"),
)

DEFAULT_STYLES: tuple[str, ...] = (
    "multi-choice",
    "coordinate",
    "yes/no",
    "word/short-phrase",
    "short description",
    "detailed description",
    "comparison",
    "chain-of-thought (step-by-step)",
    "specified style",
)

_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Column names the scores table already uses; a capability may not shadow them.
RESERVED_KEYS = frozenset({"id", "source", "styles", "scorer", "content_hash", "failed", "failure"})

ENV_TAXONOMY = "MMSSR_TAXONOMY"


class TaxonomyError(ValueError):
    """A taxonomy config that cannot be used (bad key, duplicate, unreadable file)."""


@dataclass(frozen=True)
class Capability:
    key: str
    phrase: str


@dataclass(frozen=True)
class Taxonomy:
    capabilities: tuple[Capability, ...] = field(
        default_factory=lambda: tuple(Capability(k, p) for k, p in DEFAULT_CAPABILITIES)
    )
    styles: tuple[str, ...] = DEFAULT_STYLES

    def __post_init__(self) -> None:
        keys = [c.key for c in self.capabilities]
        for key in keys:
            if not _KEY_RE.match(key):
                raise TaxonomyError(f"capability key {key!r} must match {_KEY_RE.pattern}")
            if key in RESERVED_KEYS or key.endswith("__argmax"):
                raise TaxonomyError(f"capability key {key!r} is reserved")
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise TaxonomyError(f"duplicate capability keys: {dupes}")
        if not self.capabilities:
            raise TaxonomyError("a taxonomy needs at least one capability")
        if len(set(self.styles)) != len(self.styles) or not self.styles:
            raise TaxonomyError("styles must be a non-empty list without duplicates")
        for s in self.styles:
            if "," in s or "+" in s:
                raise TaxonomyError(f"style {s!r} may not contain ',' or '+' (they delimit labels and bins)")

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.capabilities]

    def phrase(self, key: str) -> str:
        for c in self.capabilities:
            if c.key == key:
                return c.phrase
        raise KeyError(key)

    def resolve(self, keys: list[str] | None) -> list[str]:
        """Validate a user's capability subset (order kept); None means all."""
        if keys is None:
            return self.keys
        unknown = [k for k in keys if k not in self.keys]
        if unknown:
            raise TaxonomyError(f"unknown capabilities {unknown}; known: {', '.join(self.keys)}")
        if len(set(keys)) != len(keys):
            raise TaxonomyError(f"capabilities listed twice: {keys}")
        return list(keys)

    def to_dict(self) -> dict:
        return {
            "capabilities": [{"key": c.key, "phrase": c.phrase} for c in self.capabilities],
            "styles": list(self.styles),
        }


def taxonomy_from_dict(data: dict) -> Taxonomy:
    """Build a taxonomy from a config mapping.

    `capabilities`: list of {key, phrase}; with `extend: true` (default) they are appended to the 14
    defaults, with `extend: false` they replace them. `styles` (optional) replaces the style labels.
    """
    base = Taxonomy()
    caps = list(base.capabilities) if data.get("extend", True) else []
    for item in data.get("capabilities", []):
        if not isinstance(item, dict) or "key" not in item:
            raise TaxonomyError(f"capability entry {item!r} needs a 'key' (and a 'phrase')")
        caps.append(Capability(str(item["key"]), str(item.get("phrase") or item["key"].replace("_", " "))))
    styles = tuple(data.get("styles", base.styles))
    return Taxonomy(tuple(caps), styles)


def load_taxonomy(path: str | os.PathLike | None = None) -> Taxonomy:
    """Load the taxonomy from `path`, else from $MMSSR_TAXONOMY, else the paper's defaults.

    JSON and TOML files are accepted (by extension).
    """
    path = path or os.environ.get(ENV_TAXONOMY)
    if not path:
        return Taxonomy()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaxonomyError(f"cannot read taxonomy config {p}: {exc.strerror}") from exc
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise TaxonomyError(f"taxonomy config {p} is not valid {p.suffix or 'JSON'}: {exc}") from exc
    return taxonomy_from_dict(data)
