"""Checking a teacher's answer: one JSON object with every capability scored 0..5 and known styles; what is
wrong otherwise gets a reason code (FAILURE_REASONS)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mmssr_core.taxonomy import Taxonomy

# Validation failures (the teacher answered, but not usably) and what they mean.
FAILURE_REASONS: dict[str, str] = {
    "malformed_json": "the answer is not one JSON object",
    "partial_answer": "a capability score or the styles are missing (or styles are empty)",
    "out_of_range": "a score is not an integer from 0 to 5",
    "unknown_style": "a style is not in the taxonomy's label set",
    "empty_answer": "the answer has no text (no choices[0].message.content)",
}
VALIDATION_REASONS = frozenset(FAILURE_REASONS)


@dataclass(frozen=True)
class TeacherAnswer:
    scores: dict[str, int]
    styles: list[str]


@dataclass(frozen=True)
class TeacherFailure:
    reason: str
    message: str = ""

    def __bool__(self) -> bool:
        return False


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def _parse_json_object(text: str) -> dict | None:
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    try:
        obj = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            obj = json.loads(text[start : end + 1])
        except ValueError:
            return None
    return obj if isinstance(obj, dict) else None


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
        return int(v)
    return None


def validate_answer(text: str | None, taxonomy: Taxonomy) -> TeacherAnswer | TeacherFailure:
    """Parse and check one teacher answer; the failure names the first problem class and every detail."""
    if text is None or not str(text).strip():
        return TeacherFailure("empty_answer", "the answer has no text")
    obj = _parse_json_object(str(text))
    if obj is None:
        return TeacherFailure("malformed_json", f"not one JSON object: {str(text)[:120]!r}")
    scores_obj = obj.get("scores")
    if not isinstance(scores_obj, dict):  # tolerate a flat object {key: n, ..., "styles": [...]}
        scores_obj = {k: obj[k] for k in taxonomy.keys if k in obj}
    missing = [k for k in taxonomy.keys if k not in scores_obj or scores_obj[k] is None]
    raw_styles = obj.get("styles")
    if isinstance(raw_styles, str):
        raw_styles = [s.strip() for s in raw_styles.split(",") if s.strip()]
    if missing or not isinstance(raw_styles, list) or not raw_styles:
        what = []
        if missing:
            what.append(f"scores missing for {missing}")
        if not isinstance(raw_styles, list) or not raw_styles:
            what.append("no styles")
        return TeacherFailure("partial_answer", "; ".join(what))
    scores: dict[str, int] = {}
    bad = []
    for k in taxonomy.keys:
        n = _as_int(scores_obj[k])
        if n is None or not 0 <= n <= 5:
            bad.append(f"{k}={scores_obj[k]!r}")
        else:
            scores[k] = n
    if bad:
        return TeacherFailure("out_of_range", f"scores must be integers 0..5: {', '.join(bad)}")
    canon = {s.lower(): s for s in taxonomy.styles}
    styles: list[str] = []
    unknown = []
    for s in raw_styles:
        label = canon.get(str(s).strip().lower()) if isinstance(s, str) else None
        if label is None:
            unknown.append(s)
        elif label not in styles:
            styles.append(label)
    if unknown:
        return TeacherFailure("unknown_style", f"labels not in the style set: {unknown!r:.200}")
    return TeacherAnswer(scores, styles)
