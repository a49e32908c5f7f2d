"""The teacher client: one structured question per sample over the `openai` backend's transport (replicas,
retries, backoff, API key), with the answer constrained as far as the server allows and re-asked when
invalid."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmssr_core.taxonomy import Taxonomy, load_taxonomy
from mmssr_core.teacher.answer import TeacherAnswer, TeacherFailure, validate_answer
from mmssr_core.teacher.prompt import (
    REASK_TEMPLATE,
    TEACHER_SYSTEM_PROMPT,
    TeacherIdentity,
    answer_schema,
    teacher_instruction,
    teacher_prompt_version,
)

STRUCTURED_MODES = ("auto", "json_schema", "json_object", "none")


@dataclass(frozen=True)
class TeacherRequest:
    content_hash: str
    sample_id: str
    source: str
    conversations: tuple[dict, ...]
    image_file: str | None


def encode_image(path: str, max_side: int = 1024) -> str:
    """The teacher sees the image at up to `max_side` pixels on the long side (aspect kept), as JPEG."""
    from PIL import Image

    from mmssr_core.image_prep import open_rgb

    im = open_rgb(path, target=(max_side, max_side))
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=92)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


class TeacherClient:
    """Asks one structured question per sample through an OpenAIBackend's transport.

    The backend brings replicas, per-replica concurrency, retries with backoff on 429/5xx/timeouts and
    the API key from its environment variable; this class adds the teacher's request, the validation and
    the re-asks.
    """

    def __init__(
        self,
        backend: Any,
        taxonomy: Taxonomy,
        *,
        structured: str = "auto",
        max_attempts: int = 3,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        image_max_side: int = 1024,
    ):
        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured must be one of {STRUCTURED_MODES}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.backend = backend
        self.taxonomy = taxonomy
        self.structured = structured
        self._mode = "json_schema" if structured == "auto" else structured
        self.max_attempts = int(max_attempts)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.image_max_side = int(image_max_side)
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "reasks": 0, "downgrades": 0}

    @classmethod
    def from_urls(
        cls,
        base_urls: Sequence[str],
        taxonomy: Taxonomy,
        *,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        timeout: float = 120.0,
        max_retries: int = 5,
        **kwargs: Any,
    ) -> TeacherClient:
        from mmssr_core.scoring.openai_backend import OpenAIBackend

        backend = OpenAIBackend(
            model=model,
            base_urls=list(base_urls),
            api_key_env=api_key_env,
            concurrency=concurrency,
            timeout=timeout,
            max_retries=max_retries,
        )
        return cls(backend, taxonomy, **kwargs)

    # -- identity ------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.backend.resolve_model()

    def identity(self) -> TeacherIdentity:
        host = self.backend.replica_hosts[0]
        return TeacherIdentity(
            model=self.model,
            host=host,
            prompt_version=teacher_prompt_version(self.taxonomy),
            extra=(("image_max_side", str(self.image_max_side)), ("temperature", repr(self.temperature))),
        )

    @property
    def concurrency(self) -> int:
        return self.backend.total_concurrency

    # -- payload -------------------------------------------------------------------------------
    def messages(self, req: TeacherRequest, image_url: str | None) -> list[dict]:
        text = teacher_instruction(self.taxonomy, req.conversations, image_url is not None)
        content: list[dict] = []
        if image_url is not None:
            content.append({"type": "image_url", "image_url": {"url": image_url}})
        content.append({"type": "text", "text": text})
        return [{"role": "system", "content": TEACHER_SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def payload(self, messages: list[dict]) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        with self._lock:
            mode = self._mode
        if mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "teacher_labels", "schema": answer_schema(self.taxonomy), "strict": True},
            }
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    @staticmethod
    def _sent_mode(body: dict) -> str:
        rf = body.get("response_format")
        return rf["type"] if rf else "none"

    def _downgrade(self, body: dict, message: str) -> bool:
        """A 400 about response_format: step json_schema -> json_object -> none (only in auto mode).
        Relative to the mode that request carried, so concurrent requests step down only once."""
        if self.structured != "auto":
            return False
        low = message.lower()
        if not any(w in low for w in ("response_format", "json_schema", "json_object", "structured", "guided")):
            return False
        sent = self._sent_mode(body)
        with self._lock:
            if sent == "none":
                return False
            if self._mode != sent:  # another request already stepped down: just send again
                return True
            self._mode = {"json_schema": "json_object", "json_object": "none"}[sent]
            self.stats["downgrades"] += 1
        return True

    def _post(self, body: dict) -> dict | TeacherFailure | tuple[int, str]:
        """One chat completion through the backend's retrying transport."""
        from mmssr_core.scoring.base import Failure
        from mmssr_core.scoring.openai_backend import BadStatus, Malformed

        with self._lock:
            self.stats["requests"] += 1
        res = self.backend.post_chat(body)
        if isinstance(res, Failure):
            return TeacherFailure(res.reason, res.message)
        if isinstance(res, BadStatus):
            return (res.status, res.message)
        if isinstance(res, Malformed):
            return TeacherFailure("malformed_response", res.message)
        return res

    def label(self, req: TeacherRequest) -> tuple[TeacherAnswer | TeacherFailure, int]:
        """(answer or failure, number of asks) for one sample; never raises for a bad sample."""
        image_url = None
        if req.image_file:
            try:
                image_url = encode_image(req.image_file, self.image_max_side)
            except Exception as exc:  # noqa: BLE001 - the sample's own problem
                return TeacherFailure(
                    "image_error", f"sample {req.sample_id!r}: cannot read {req.image_file}: {exc}"
                ), 0
        messages = self.messages(req, image_url)
        asks = 0
        downgrades = 0
        last: TeacherFailure = TeacherFailure("not_asked", "")
        while asks < self.max_attempts:
            body = self.payload(messages)
            res = self._post(body)
            if isinstance(res, TeacherFailure):
                if res.reason == "malformed_response":
                    asks += 1
                    last = TeacherFailure("malformed_json", res.message)
                    continue
                return res, asks + 1
            if isinstance(res, tuple):
                status, message = res
                if status == 400 and downgrades < 2 and self._downgrade(body, message):
                    downgrades += 1
                    continue
                reason = "http_401" if status in (401, 403) else f"http_{status}"
                return TeacherFailure(reason, f"HTTP {status}: {message}"[:500]), asks + 1
            asks += 1
            try:
                text = res["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                text = None
            out = validate_answer(text, self.taxonomy)
            if isinstance(out, TeacherAnswer):
                return out, asks
            last = out
            if asks < self.max_attempts:
                with self._lock:
                    self.stats["reasks"] += 1
                messages = messages[:2] + [
                    {"role": "assistant", "content": (text or "")[:4000]},
                    {"role": "user", "content": REASK_TEMPLATE.format(detail=f"{out.reason}: {out.message}")},
                ]
        return TeacherFailure(last.reason, f"{last.message} (asked {asks} times)"[:500]), asks

    def close(self) -> None:
        self.backend.close()


def make_client(
    base_urls: Sequence[str], model: str | None, taxonomy: Taxonomy | None = None, **kwargs: Any
) -> TeacherClient:
    return TeacherClient.from_urls(base_urls, taxonomy or load_taxonomy(), model=model, **kwargs)
