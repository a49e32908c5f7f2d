"""Input profiles: exactly which text, token stream and image features a scorer is fed.

The released mmSSR scorer and styler were trained (and their paper numbers measured) on one precise input:
the reference inference's text (including its character-set strip of `Question: `), its token stream (every
piece of the chat tokenized on its own, an extra newline token after the image) and its image features (the
single 384 px tile: the 27 x 27 SigLIP grid plus one `image_newline`, 730 features). A profile names such an
input so backends can reproduce it and so the choice is part of the scorer identity (a score made from other
inputs is a different score and is cached apart).

- `reference` (default): byte-identical to the reference inference.
- `clean`: the same token stream and image features, but the conversation text without the strip quirk
  (`Question:` is removed as a prefix, surrounding whitespace trimmed).
- `native`: what the checkpoint's own processor does (chat template tokenized as one string, AnyRes
  base + tiles for LLaVA-OneVision), with the clean text. For checkpoints that are not LLaVA-OneVision
  (teachers, other families) this is the only profile that applies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputProfile:
    name: str
    strip_quirk: bool  # the reference's `str.strip("Question: ")` on each question
    token_stream: str  # "pieces": every chat piece tokenized alone; "template": the rendered chat at once
    image_features: str  # "single-tile": grid + image_newline of one 384 px tile; "native": the model's own

    @property
    def single_tile(self) -> bool:
        return self.image_features == "single-tile"

    @property
    def per_piece(self) -> bool:
        return self.token_stream == "pieces"

    def fields(self) -> dict:
        return {
            "profile": self.name,
            "strip_quirk": self.strip_quirk,
            "token_stream": self.token_stream,
            "image_features": self.image_features,
        }


PROFILES: dict[str, InputProfile] = {
    "reference": InputProfile("reference", strip_quirk=True, token_stream="pieces", image_features="single-tile"),
    "clean": InputProfile("clean", strip_quirk=False, token_stream="pieces", image_features="single-tile"),
    "native": InputProfile("native", strip_quirk=False, token_stream="template", image_features="native"),
}
DEFAULT_PROFILE = "reference"


def get_profile(profile: "str | InputProfile | None") -> InputProfile:
    """A profile by name (None = the default); an InputProfile passes through."""
    if isinstance(profile, InputProfile):
        return profile
    name = profile or DEFAULT_PROFILE
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown input profile {name!r}; choose one of {', '.join(PROFILES)}") from None
