"""A teacher mode for the local OpenAI-compatible test server: answers the structured labelling request.

`TeacherTestServer` is the scoring `TestServer` with one more kind of request: a teacher request (its
system prompt is `teacher.TEACHER_SYSTEM_PROMPT`) gets a JSON answer `{"scores": {...}, "styles": [...]}`
derived deterministically from the instance text (`intended_answer`), or from `answer_fn` when given.
Capability keys and style labels are read from the request's json_schema when sent, else from the
taxonomy given at construction. Teacher faults (malformed_json, out_of_range, unknown_style,
partial_answer, fenced_json) can be injected like the transport faults of the base server, and
`response_format` support can be switched off (`json_schema="reject"`: a 400 naming response_format).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from mmssr_core.taxonomy import Taxonomy
from mmssr_core.teacher.prompt import TEACHER_SYSTEM_PROMPT
from mmssr_core.testing import testserver as base
from mmssr_core.testing.testserver import TestServer, _chat_response, _seed, request_text

TEACHER_FAULTS = ("malformed_json", "out_of_range", "unknown_style", "partial_answer", "fenced_json", "empty")


def instance_text(messages: list[dict]) -> str:
    """The part of the first user turn after 'The instance:' (stable across re-asks and prompt tweaks)."""
    for m in messages:
        if m.get("role") == "user":
            text = request_text([m])
            _, sep, after = text.partition("The instance:\n")
            return after if sep else text
    return ""


def intended_answer(text: str, keys: list[str], styles: list[str]) -> dict:
    """The teacher answer the server means for this instance: scores 0..5 and 1-3 styles."""
    rng = _seed("teacher\0" + text)
    scores = {k: int(v) for k, v in zip(keys, rng.integers(0, 6, size=len(keys)))}
    k = int(rng.integers(1, 4))
    idx = rng.permutation(len(styles))[:k]
    return {"scores": scores, "styles": [styles[i] for i in idx]}


class _Replay:
    """The already-read request body, offered again to the base handler's single read."""

    def __init__(self, raw: bytes):
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        out, self.raw = (self.raw, b"") if n < 0 else (self.raw[:n], self.raw[n:])
        return out


class _TeacherHandler(base._Handler):
    def do_POST(self) -> None:  # noqa: N802
        owner: TeacherTestServer = self.server.owner  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if (
            not isinstance(body, dict)
            or not owner.is_teacher(body)
            or owner.stopped
            or not self.path.rstrip("/").endswith("/v1/chat/completions")
        ):
            # not ours: let the base handler read the same body, then keep the connection's stream
            orig = self.rfile
            self.rfile = _Replay(raw)  # type: ignore[assignment]
            try:
                return super().do_POST()
            finally:
                self.rfile = orig
        owner._record(body, dict(self.headers))
        if owner.api_key is not None and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            return self._error(401, "invalid API key")
        rf = body.get("response_format")
        if rf is not None and owner.json_schema == "reject":
            return self._error(400, "Unrecognized request argument supplied: response_format")
        if rf is not None and rf.get("type") == "json_schema" and owner.json_schema == "json_object_only":
            return self._error(400, "response_format type json_schema is not supported")
        fault = owner._take_fault("teacher", body)
        owner._pace()
        if fault and fault not in TEACHER_FAULTS:
            owner._count_fault(fault)
            return self._fault(fault, "teacher", body)
        keys, styles = owner.vocabulary(body)
        text = instance_text(body.get("messages") or [])
        answer = owner.answer_fn(text, keys, styles) if owner.answer_fn else intended_answer(text, keys, styles)
        if fault:
            owner._count_fault(fault)
            answer = json.loads(json.dumps(answer))
            if fault == "malformed_json":
                content = '{"scores": {' + ", ".join(f'"{k}": 3' for k in keys[:2]) + ", "
            elif fault == "out_of_range":
                answer["scores"][keys[0]] = 7
                content = json.dumps(answer)
            elif fault == "unknown_style":
                answer["styles"] = ["banana"] + answer["styles"]
                content = json.dumps(answer)
            elif fault == "partial_answer":
                answer["scores"].pop(keys[-1], None)
                content = json.dumps(answer)
            elif fault == "fenced_json":
                content = "```json\n" + json.dumps(answer) + "\n```"
            else:  # empty
                content = ""
        else:
            content = json.dumps(answer)
        owner._served("teacher")
        self._json(200, _chat_response(owner.model, content, None))


class TeacherTestServer(TestServer):
    """The scoring test server plus the teacher answers (see the module docstring).

    `json_schema`: "honour" (accepts response_format), "reject" (any response_format is a 400, like a
    server without structured outputs) or "json_object_only".
    """

    __test__ = False
    handler_class = _TeacherHandler

    def __init__(
        self,
        *,
        taxonomy: Taxonomy | None = None,
        json_schema: str = "honour",
        answer_fn: Callable[[str, list[str], list[str]], dict] | None = None,
        model: str = "test-teacher",
        **kwargs: Any,
    ):
        super().__init__(model=model, **kwargs)
        if json_schema not in ("honour", "reject", "json_object_only"):
            raise ValueError("json_schema must be honour, reject or json_object_only")
        self.taxonomy = taxonomy or Taxonomy()
        self.json_schema = json_schema
        self.answer_fn = answer_fn

    def inject(self, fault: str, count: int = 1, when: Any = None) -> None:
        if fault in TEACHER_FAULTS:
            with self._lock:
                self._faults.append([fault, count, when])
            return
        super().inject(fault, count, when)

    @staticmethod
    def is_teacher(body: dict) -> bool:
        for m in body.get("messages") or []:
            if m.get("role") == "system" and m.get("content") == TEACHER_SYSTEM_PROMPT:
                return True
        return False

    def vocabulary(self, body: dict) -> tuple[list[str], list[str]]:
        rf = body.get("response_format") or {}
        schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else None
        if schema:
            props = schema["properties"]
            return list(props["scores"]["properties"]), list(props["styles"]["items"]["enum"])
        return list(self.taxonomy.keys), list(self.taxonomy.styles)

    def teacher_requests(self) -> list[dict]:
        with self._lock:
            return [b for b, _ in self.recent if self.is_teacher(b)]


def expected_labels(text: str, taxonomy: Taxonomy) -> dict:
    """What the default server answers for an instance text (for tests)."""
    return intended_answer(text, list(taxonomy.keys), list(taxonomy.styles))
