"""How a recipe deduplicates: on or off, and what counts as a near duplicate.

A recipe says `dedup = false` to select from the pool as it is, or gives a table of settings; the
default removes exact duplicates (same content hash: system prompt, turns and image bytes) and near
duplicates (word-shingle Jaccard of the normalised conversation at least `text_threshold`, and every
image within `image_distance` bits of perceptual hash of its counterpart).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mmssr_core.dedup.image_hash import HASH_BITS

DEFAULT_TEXT_THRESHOLD = 0.8
DEFAULT_IMAGE_DISTANCE = 6
_FIELDS = {"enabled", "near", "text_threshold", "image_distance"}


class DedupConfigError(ValueError):
    """A deduplication setting that cannot be used; names the field."""


@dataclass(frozen=True)
class DedupConfig:
    enabled: bool = True
    near: bool = True  # False: exact duplicates only
    text_threshold: float = DEFAULT_TEXT_THRESHOLD  # Jaccard of word 3-gram sets, in (0, 1]
    image_distance: int = DEFAULT_IMAGE_DISTANCE  # max differing bits of the 64-bit perceptual hash

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool) or not isinstance(self.near, bool):
            raise DedupConfigError("dedup: 'enabled' and 'near' must be true or false")
        try:
            t, d = float(self.text_threshold), int(self.image_distance)
        except (TypeError, ValueError):
            raise DedupConfigError("dedup: text_threshold must be a number and image_distance an integer") from None
        if not 0 < t <= 1:
            raise DedupConfigError(f"dedup: text_threshold {t} must be in (0, 1]")
        if not 0 <= d < HASH_BITS // 2:
            raise DedupConfigError(f"dedup: image_distance {d} must be in 0..{HASH_BITS // 2 - 1}")
        object.__setattr__(self, "text_threshold", t)
        object.__setattr__(self, "image_distance", d)

    @property
    def key(self) -> str:
        """The partition name of this setting's duplicate groups in the store (one per distinct setting)."""
        if not self.near:
            return "exact"
        return f"near-t{round(self.text_threshold * 100):03d}-d{self.image_distance}"

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if not self.enabled:
            return "no deduplication"
        if not self.near:
            return "exact duplicates removed"
        return (
            f"exact and near duplicates removed (text Jaccard >= {self.text_threshold:g}, "
            f"images within {self.image_distance} bits)"
        )


def dedup_config(value) -> DedupConfig:
    """A recipe's `dedup` value: true/false, a table of settings, or a DedupConfig."""
    if isinstance(value, DedupConfig):
        return value
    if value is None or value is True:
        return DedupConfig()
    if value is False:
        return DedupConfig(enabled=False)
    if isinstance(value, dict):
        unknown = sorted(set(value) - _FIELDS)
        if unknown:
            raise DedupConfigError(f"dedup: unknown settings {unknown}; allowed: {sorted(_FIELDS)}")
        return DedupConfig(**value)
    raise DedupConfigError(f"dedup must be true, false or a table of settings, not {value!r}")
