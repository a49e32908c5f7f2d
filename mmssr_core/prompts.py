"""The scorer and styler prompts, byte-compatible with the released mmSSR weights (docs/method.md).

The user turn is the candidate conversation serialised as text, a newline, then one query. All 15
queries of a sample share that serialised prefix, which is what lets backends prefill it once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Sequence

from mmssr_core.image_prep import IMAGE_SIZE, load_scorer_image, open_rgb  # noqa: F401 - re-exported for backends
from mmssr_core.profiles import InputProfile, get_profile
from mmssr_core.taxonomy import Taxonomy

SYSTEM_PROMPT = "You are a helpful assistant."
IMAGE_TOKEN = "<image>"
DIGITS: tuple[str, ...] = ("0", "1", "2", "3", "4", "5")

SCORER_QUERY = (
    "On a scale of 0 to 5, how do you rate the helpfulness of the VQA instance in training a "
    "Multimodal Large Language Model for {phrase}?"
)
STYLER_QUERY = "Interaction style candidates: [{labels}]\nStyles: "

_TURN_SEP = " "  # between a question and its answer
_LINE_SEP = "\n"  # between turns, and before the query
_QUESTION = "Question: "
_ANSWER = "Answer: "
_REFERENCE_STRIP_CHARS = "Question: "  # the reference's str.strip character set (compat quirk)


def _question_text(text: str, reference_quirk: bool) -> str:
    if text.startswith(f"{IMAGE_TOKEN}\nHint:") or text.startswith("Hint:"):
        return text
    if reference_quirk:
        # The reference strips a *character set*, eating trailing letters too ("picture" -> "pictur").
        return _QUESTION + text.strip(_REFERENCE_STRIP_CHARS)
    body = text.strip()
    if body.startswith("Question:"):
        body = body[len("Question:") :].lstrip()
    return _QUESTION + body


def serialise_conversation(conversations: Sequence[dict], *, reference_quirk: bool = False, max_images: int = 1) -> str:
    """Serialise LLaVA turns as the scorer was trained to read them.

    Each human turn becomes `Question: <text> Answer: <gpt text>`; turns are joined by newlines. A human
    turn starting with `Hint:` (after an optional `<image>\\n`) keeps its text without the prefix.
    Only the first `max_images` `<image>` placeholders are kept (the scorer sees one image); later ones
    are removed so the text never names an image the model is not shown.
    """
    turns = [t for t in conversations if t.get("from") in ("human", "gpt")]
    parts: list[str] = []
    seen_images = 0
    for idx in range(0, len(turns), 2):
        human = turns[idx]["value"] or ""
        kept: list[str] = []
        pieces = human.split(IMAGE_TOKEN)
        for i, piece in enumerate(pieces):
            kept.append(piece)
            if i < len(pieces) - 1:
                if seen_images < max_images:
                    kept.append(IMAGE_TOKEN)
                seen_images += 1
        human = "".join(kept)
        answer = turns[idx + 1]["value"] if idx + 1 < len(turns) else ""
        parts.append(_question_text(human, reference_quirk) + _TURN_SEP + _ANSWER + (answer or ""))
    return _LINE_SEP.join(parts)


def scorer_query(phrase: str) -> str:
    return SCORER_QUERY.format(phrase=phrase)


def styler_query(styles: Sequence[str]) -> str:
    return STYLER_QUERY.format(labels=", ".join(styles))


@dataclass(frozen=True)
class PromptSet:
    """The prefix-independent half of every prompt: one query per capability, plus the style query."""

    capability_keys: tuple[str, ...]
    capability_queries: tuple[str, ...]
    style_query: str
    styles: tuple[str, ...]
    profile: InputProfile = get_profile(None)

    @classmethod
    def from_taxonomy(cls, taxonomy: Taxonomy, *, profile: "str | InputProfile | None" = None) -> "PromptSet":
        return cls(
            capability_keys=tuple(taxonomy.keys),
            capability_queries=tuple(scorer_query(c.phrase) for c in taxonomy.capabilities),
            style_query=styler_query(taxonomy.styles),
            styles=tuple(taxonomy.styles),
            profile=get_profile(profile),
        )

    @property
    def reference_quirk(self) -> bool:
        return self.profile.strip_quirk

    def prefix(self, conversations: Sequence[dict]) -> str:
        """The shared part of the user turn: serialised conversation plus the newline before the query."""
        return serialise_conversation(conversations, reference_quirk=self.profile.strip_quirk) + _LINE_SEP

    @property
    def version(self) -> str:
        """Changes whenever any prompt text or prompt rule changes; part of the scorer identity."""
        blob = json.dumps(
            {
                "system": SYSTEM_PROMPT,
                "scorer": SCORER_QUERY,
                "styler": STYLER_QUERY,
                "queries": self.capability_queries,
                "style_query": self.style_query,
                "keys": self.capability_keys,
                "seps": [_TURN_SEP, _LINE_SEP, _QUESTION, _ANSWER],
                "image_size": IMAGE_SIZE,
                "input": self.profile.fields(),
            },
            sort_keys=True,
        )
        return f"p2-{self.profile.name}-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def chatml(user_text: str, system: str = SYSTEM_PROMPT) -> str:
    """The qwen ChatML rendering the released models expect, ending where the assistant answers."""
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user_text}<|im_end|>\n<|im_start|>assistant\n"


def parse_styles(text: str, styles: Sequence[str]) -> list[str]:
    """Parse a comma-separated style answer into known labels, in order, duplicates dropped.

    Raises ValueError when nothing known is found, so callers re-ask instead of storing an empty label.
    Splitting on ', ' is unsafe (labels contain '/' and parentheses), so labels are matched greedily by
    position in the text.
    """
    found: list[tuple[int, str]] = []
    lowered = text.lower()
    for label in sorted(styles, key=len, reverse=True):
        start = 0
        while True:
            pos = lowered.find(label.lower(), start)
            if pos < 0:
                break
            # skip if this span lies inside a longer label already found
            if not any(p <= pos < p + len(other) for p, other in found):
                found.append((pos, label))
            start = pos + len(label)
    out: list[str] = []
    for _, label in sorted(found):
        if label not in out:
            out.append(label)
    if not out:
        raise ValueError(f"no known style label in answer {text[:80]!r}")
    return out
