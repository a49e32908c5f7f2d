"""A weight-free, deterministic heuristic backend: the demo default and the test workhorse.

It is NOT the trained mmSSR scorer. It guesses a sample's interaction styles from the conversation's form
(listed options, yes/no answers, coordinates, answer length, step-by-step reasoning, explicit format
instructions) and each capability's relevance from lexical cues in the text plus a few cheap image
features (document-like vs photo-like). It speaks the same protocol as the real backends: a relevance
guess s in [0, 5] becomes a distribution over the digits 0..5 (a discretised Gaussian around s, with a
small per-sample deterministic offset so expected scores rarely tie), so the runner, cache and selection
paths are exactly those of a real scorer.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

import numpy as np

from mmssr_core.prompts import DIGITS, IMAGE_TOKEN, PromptSet
from mmssr_core.scoring.base import Failure, ScoreRequest, ScorerIdentity

MODEL = "rules-v1"


def _rx(*alts: str) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(alts) + r")", re.IGNORECASE)


# Lexical cues per capability key of the default taxonomy. Counted in questions (weight 1) and answers
# (weight 0.4); hits saturate. Capabilities added by configuration use the words of their phrase.
CUES: dict[str, re.Pattern] = {
    "object_spatial_understanding": _rx(
        r"left",
        r"right",
        r"above",
        r"below",
        r"behind",
        r"in front",
        r"next to",
        r"beside",
        r"between",
        r"near",
        r"top",
        r"bottom",
        r"corner",
        r"position",
        r"locat",
        r"where",
        r"under",
        r"inside",
        r"closest",
        r"farthest",
        r"distance",
        r"direction",
        r"how many",
        r"count",
        r"number of",
    ),
    "attribute_identification": _rx(
        r"colou?r",
        r"red\b",
        r"blue",
        r"green",
        r"yellow",
        r"black",
        r"white",
        r"orange",
        r"purple",
        r"pink",
        r"brown",
        r"gr[ae]y",
        r"shape",
        r"size",
        r"material",
        r"wearing",
        r"texture",
        r"made of",
        r"what kind",
        r"what type",
        r"appearance",
        r"tall",
        r"large",
        r"small",
    ),
    "logical_deduction": _rx(
        r"therefore",
        r"thus",
        r"hence",
        r"deduc",
        r"infer",
        r"conclu",
        r"logic",
        r"puzzle",
        r"if\b",
        r"which of the following",
        r"must be",
        r"cannot be",
        r"impl(?:y|ies)",
        r"rule",
        r"pattern",
        r"sequence",
        r"true",
        r"false",
        r"so\b",
    ),
    "scene_understanding": _rx(
        r"scene",
        r"setting",
        r"environment",
        r"background",
        r"image shows?",
        r"picture shows?",
        r"depict",
        r"describe",
        r"overall",
        r"place",
        r"indoor",
        r"outdoor",
        r"street",
        r"room",
        r"landscape",
        r"view",
        r"taking place",
        r"atmosphere",
        r"happening",
        r"elements of the",
    ),
    "fine_grained_recognition": _rx(
        r"breed",
        r"species",
        r"model",
        r"brand",
        r"make of",
        r"type of",
        r"kind of",
        r"specific",
        r"identify",
        r"name of",
        r"what is this",
        r"dish",
        r"bird",
        r"dog",
        r"cat\b",
        r"flower",
        r"plant",
        r"landmark",
        r"celebrity",
        r"logo",
        r"vehicle",
        r"food",
    ),
    "language_generation": _rx(
        r"write",
        r"story",
        r"poem",
        r"caption",
        r"explain",
        r"essay",
        r"letter to",
        r"post",
        r"compose",
        r"summar",
        r"elaborate",
        r"in detail",
        r"detailed",
        r"describe",
    ),
    "in_context_learning": _rx(
        r"example",
        r"following pattern",
        r"similar to",
        r"as shown",
        r"next in",
        r"sequence",
        r"analog",
        r"like the",
        r"previous",
        r"earlier",
        r"mentioned",
    ),
    "comparative_analysis": _rx(
        r"compar",
        r"differ",
        r"similar",
        r"more than",
        r"less than",
        r"fewer",
        r"greater",
        r"larger",
        r"smaller",
        r"bigger",
        r"higher",
        r"lower",
        r"versus",
        r"vs\.?",
        r"both",
        r"contrast",
        r"most",
        r"least",
        r"same",
    ),
    "activity_recognition": _rx(
        r"doing",
        r"playing",
        r"riding",
        r"walking",
        r"running",
        r"eating",
        r"sitting",
        r"standing",
        r"holding",
        r"activit",
        r"action",
        r"sport",
        r"game",
        r"perform",
        r"engaged",
        r"jump",
        r"throw",
        r"catch",
        r"cook",
        r"driving",
        r"swim",
        r"ski",
        r"surf",
        r"skateboard",
        r"play",
    ),
    "causal_reasoning": _rx(
        r"why",
        r"because",
        r"cause",
        r"reason",
        r"result",
        r"lead to",
        r"leads to",
        r"due to",
        r"effect",
        r"consequen",
        r"so that",
        r"in order to",
        r"what would happen",
        r"purpose",
        r"might",
    ),
    "humanities": _rx(
        r"histor",
        r"art\b",
        r"artist",
        r"painting",
        r"cultur",
        r"religio",
        r"music",
        r"literat",
        r"poem",
        r"famous",
        r"century",
        r"war\b",
        r"ancient",
        r"museum",
        r"philosoph",
        r"tradition",
        r"meme",
        r"humou?r",
        r"funny",
        r"joke",
        r"politic",
        r"societ",
    ),
    "stem_knowledge": _rx(
        r"math",
        r"calculat",
        r"comput",
        r"equation",
        r"solve",
        r"sum\b",
        r"product",
        r"area",
        r"perimeter",
        r"angle",
        r"triangle",
        r"circle",
        r"square",
        r"probabilit",
        r"fraction",
        r"percent",
        r"ratio",
        r"rate",
        r"physics",
        r"chemi",
        r"biolog",
        r"science",
        r"formula",
        r"function",
        r"linear",
        r"geometr",
        r"volume",
        r"mean\b",
        r"median",
        r"average",
        r"frac",
        r"digit",
    ),
    "data_understanding": _rx(
        r"table",
        r"chart",
        r"graph",
        r"plot",
        r"axis",
        r"bar\b",
        r"column",
        r"row\b",
        r"data",
        r"statistic",
        r"trend",
        r"percentage",
        r"survey",
        r"frequency",
        r"stem-and-leaf",
        r"diagram",
        r"figure",
        r"record",
        r"schedule",
        r"price",
    ),
    "optical_character_recognition": _rx(
        r"text",
        r"read",
        r"written",
        r"writing",
        r"sign",
        r"says?\b",
        r"word",
        r"letter",
        r"label",
        r"title",
        r"number on",
        r"logo",
        r"brand",
        r"caption",
        r"font",
        r"printed",
        r"handwrit",
        r"ocr",
        r"quote",
    ),
}

# Extra relevance from image features: (document-like, photo-like, text-only) per capability.
IMAGE_TERMS: dict[str, tuple[float, float, float]] = {
    "optical_character_recognition": (0.8, 0.0, -1.0),
    "data_understanding": (0.7, -0.2, -0.6),
    "stem_knowledge": (0.3, -0.1, 0.0),
    "scene_understanding": (-0.4, 0.6, -1.0),
    "activity_recognition": (-0.5, 0.4, -1.0),
    "attribute_identification": (-0.2, 0.4, -0.8),
    "fine_grained_recognition": (-0.2, 0.3, -0.8),
    "object_spatial_understanding": (0.0, 0.3, -1.0),
}

_EQUATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[-+*/×÷=]\s*\d+|\\frac|=)")
_REASONING = re.compile(r"\b(?:so|therefore|thus|hence|because|first|then|next|finally|step|since)\b", re.I)
_OPTION_LINE = re.compile(r"(?m)^\s*\(?[A-H][\.\):]\s*\S")
_CHOICES = re.compile(r"\b(?:choices|options)\s*:|which of the following", re.I)
_LETTER_ANSWER = re.compile(r"^\s*\(?[A-H]\)?(?:[\.\):]|\s*$)")
_YESNO = re.compile(r"^\s*(?:yes|no)\b", re.I)
_NUM = r"-?\d+(?:\.\d+)?"
_COORD = re.compile(rf"\[\s*{_NUM}\s*,\s*{_NUM}(?:\s*,\s*{_NUM}){{1,}}\s*\]|\(\s*{_NUM}\s*,\s*{_NUM}\s*\)")
_COORD_Q = re.compile(r"\b(?:bounding box|coordinates?|bbox|region)\b", re.I)
_COMPARE_Q = re.compile(
    r"\b(?:compar\w*|difference between|differ from|differences|similarit\w*|versus|vs\.|"
    r"which (?:one )?is (?:more|less|bigger|smaller|larger|taller|shorter|higher|lower|better|worse)|"
    r"(?:more|less|fewer|greater|larger|smaller|bigger|taller|shorter|higher|lower|better|worse|older|younger|"
    r"longer|heavier|lighter|faster|slower|cheaper|warmer|colder) than)\b",
    re.I,
)
_STRONG = re.compile(
    r"\b(?:therefore|thus|hence|step \d|first,|second,|finally,|so the answer|the answer is|we get|we have|"
    r"subtract|multiply|divide|calculate|plug)\b",
    re.I,
)
_FORMAT = re.compile(
    r"(?:answer with (?:the |a |an )?(?:option|single|one|letter|number)|in (?:one|a single) (?:word|sentence)|"
    r"single word|short phrase|using a single|answer directly|answer briefly|be brief|briefly|in \d+ words|"
    r"respond with|reply with|(?:your|the) (?:final )?answer (?:should|must)|in the format|format:|"
    r"step[- ]by[- ]step|one sentence|hint:)",
    re.I,
)
_WORD = re.compile(r"\w+")
_PHRASE = re.compile(r"Model for (.*)\?\s*$")


def _split_turns(conversations: Sequence[dict]) -> list[tuple[str, str]]:
    turns = [t for t in conversations if t.get("from") in ("human", "gpt")]
    out = []
    for i in range(0, len(turns), 2):
        q = (turns[i].get("value") or "").replace(IMAGE_TOKEN, " ")
        a = (turns[i + 1].get("value") or "") if i + 1 < len(turns) else ""
        out.append((q, a))
    return out


def _unit(key: str, *parts: str) -> float:
    """A deterministic number in [-0.5, 0.5) from the sample key: breaks ties without randomness."""
    h = hashlib.sha256("\0".join((key,) + parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 - 0.5


def image_features(path: str | None) -> dict[str, float] | None:
    """Cheap features of a small thumbnail: share of near-white pixels, mean saturation, edge density."""
    if not path:
        return None
    from PIL import Image

    with Image.open(path) as im:
        im.draft("RGB", (128, 128))  # JPEG: decode at reduced scale
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        small = im.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    px = np.asarray(small, dtype=np.float32) / 255.0
    mx, mn = px.max(axis=2), px.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    gray = px.mean(axis=2)
    edges = (np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean()) / 2
    return {"white": float((mn > 0.9).mean()), "saturation": float(sat.mean()), "edges": float(edges)}


class RulesBackend:
    """Heuristic scorer/styler: no weights, deterministic, fast. See the module docstring for honesty."""

    name = "rules"
    default_batch_size = 64

    def __init__(self, sigma: float = 0.8, jitter: float = 0.3):
        if sigma <= 0:
            raise ValueError("sigma must be > 0")
        self.sigma = float(sigma)
        self.jitter = float(jitter)

    def identity(self, prompts: PromptSet) -> ScorerIdentity:
        return ScorerIdentity(
            backend="rules",
            model=MODEL,
            prompt_version=prompts.version,
            extra=(("jitter", repr(self.jitter)), ("sigma", repr(self.sigma))),
        )

    # -- capabilities --------------------------------------------------------------------------
    def relevance(self, req: ScoreRequest, key: str, phrase: str, img: dict | None) -> float:
        """The heuristic score s in [0, 5] of one capability for one sample."""
        turns = _split_turns(req.conversations)
        questions = " ".join(q for q, _ in turns)
        answers = " ".join(a for _, a in turns)
        cue = CUES.get(key)
        if cue is None:  # a configured capability: its phrase's words are its cues
            words = [re.escape(w) for w in _WORD.findall(phrase.lower()) if len(w) >= 4]
            cue = _rx(*words) if words else None
        hits = 0.0
        if cue is not None:
            hits = min(len(cue.findall(questions)), 4) + 0.4 * min(len(cue.findall(answers)), 6)
        answer_words = len(_WORD.findall(answers))
        if key == "language_generation":
            hits += min(answer_words / 60.0, 3.0)
        if key == "in_context_learning" and len(turns) >= 3:
            hits += 0.5 * (len(turns) - 2)
        if key in ("stem_knowledge", "logical_deduction"):
            hits += 0.3 * min(len(_EQUATION.findall(answers)), 5)
        if key == "optical_character_recognition":
            hits += 0.3 * min(answers.count('"') // 2, 3)
        term = 0.0
        doc, photo, textonly = IMAGE_TERMS.get(key, (0.0, 0.0, 0.0))
        if img is None:
            term = textonly
        else:
            doc_like = img["white"] > 0.45 and img["saturation"] < 0.12
            photo_like = img["saturation"] > 0.15 and img["white"] < 0.3
            term = doc * doc_like + photo * photo_like
        richness = min(np.log1p(answer_words) / np.log(200.0), 1.0)  # informative answers help any skill
        reasoning = 0.4 if len(_REASONING.findall(answers)) >= 2 else 0.0
        s = 0.4 + richness + reasoning + 3.0 * (1.0 - np.exp(-0.6 * hits)) + term
        s += self.jitter * _unit(req.key, key)
        return float(np.clip(s, 0.0, 5.0))

    def distribution(self, s: float) -> np.ndarray:
        d = np.arange(len(DIGITS), dtype=np.float64)
        logits = -((d - s) ** 2) / (2 * self.sigma**2)
        p = np.exp(logits - logits.max())
        return p / p.sum()

    def digit_distributions(
        self, requests: Sequence[ScoreRequest], queries: Sequence[str], prompts: PromptSet
    ) -> list[list[Any]]:
        by_query = dict(zip(prompts.capability_queries, prompts.capability_keys))
        out: list[list[Any]] = []
        for req in requests:
            try:
                img = image_features(req.image_file)
            except Exception as exc:  # noqa: BLE001 - any decode problem is this sample's failure
                f = Failure("image_error", f"sample {req.sample_id!r}: cannot read {req.image_file}: {exc}")
                out.append([f] * len(queries))
                continue
            row = []
            for q in queries:
                m = _PHRASE.search(q)
                phrase = m.group(1) if m else q
                key = by_query.get(q) or phrase
                row.append(self.distribution(self.relevance(req, key, phrase, img)))
            out.append(row)
        return out

    # -- styles --------------------------------------------------------------------------------
    def style_scores(self, req: ScoreRequest) -> dict[str, tuple[float, int]]:
        """label -> (strength, first turn index) for the default style vocabulary."""
        found: dict[str, tuple[float, int]] = {}

        def add(label: str, strength: float, turn: int) -> None:
            old = found.get(label)
            if old is None or strength > old[0]:
                found[label] = (strength, turn if old is None else min(turn, old[1]))

        for i, (q, a) in enumerate(_split_turns(req.conversations)):
            form = False
            if len(_OPTION_LINE.findall(q)) >= 2 or _CHOICES.search(q) or (_LETTER_ANSWER.match(a) and len(a) < 40):
                add("multi-choice", 3.0, i)
                form = True
            if _YESNO.match(a):
                add("yes/no", 2.9, i)
                form = True
            if _COORD.search(a) or (_COORD_Q.search(q) and _COORD.search(a + q)):
                add("coordinate", 3.0, i)
                form = True
            words = len(_WORD.findall(a))
            lines = [ln for ln in a.splitlines() if ln.strip()]
            strong = len(_STRONG.findall(a))
            equations = len(_EQUATION.findall(a))
            if (
                strong >= 2
                or (equations >= 2 and len(lines) >= 2)
                or re.search(r"step[- ]by[- ]step|let's think", q + a, re.I)
            ):
                add("chain-of-thought (step-by-step)", 2.5, i)
            if _COMPARE_Q.search(q):
                add("comparison", 1.8, i)
            if _FORMAT.search(q):
                add("specified style", 2.6, i)
            if words <= 3:
                if not form:
                    add("word/short-phrase", 1.5, i)
            elif words <= 40:
                if not form or words > 12:
                    add("short description", 1.5, i)
            else:
                add("detailed description", 1.5, i)
        return found

    def styles(self, requests: Sequence[ScoreRequest], prompts: PromptSet) -> list[Any]:
        out: list[Any] = []
        allowed = list(prompts.styles)
        for req in requests:
            found = {k: v for k, v in self.style_scores(req).items() if k in allowed and v[0] >= 1.0}
            if not found:
                # a configured vocabulary without any of our labels: fall back to its first label
                out.append([allowed[0]] if allowed else Failure("no_style", "empty style vocabulary"))
                continue
            ranked = sorted(found, key=lambda k: (-found[k][0], found[k][1], allowed.index(k)))
            out.append(ranked[:4])
        return out

    def close(self) -> None:
        pass
