"""Score through any OpenAI-compatible chat endpoint (vLLM's server first), over one or several replicas.

Standard library only (http.client + threads), so the base install stays light.

Scores: one chat completion per (sample, capability) with `max_tokens=1`, `temperature=0`, `logprobs` and
`top_logprobs=20`; the digit tokens "0".."5" found there are renormalised (a digit absent from the list
gets probability 0; none at all is a malformed answer). On vLLM servers that accept `logprob_token_ids`
(explicit token ids whose logprobs are returned whatever their rank), the digit ids are looked up once via
vLLM's `/tokenize` and sent too, so no digit is ever cut off by top-k.
Styles: a generation constrained by vLLM structured outputs (`structured_outputs: {"regex": ...}`, or the
older `guided_regex`) to a comma-separated list of the labels, validated with `prompts.parse_styles`.
A server that rejects an extension with HTTP 400 naming it gets the request again without it (remembered).

Robustness: the transport (`http_transport.HttpTransport`) brings replicas, per-replica concurrency,
retries with backoff, a whole-request deadline, a response size cap and redaction of every message;
here, malformed answers (no digit, logprobs that are not log-probabilities) are re-asked a bounded number
of times, then become a `Failure` with the reason. The API key comes from an environment variable and is
never logged or put in a message.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from mmssr_core.prompts import DIGITS, IMAGE_TOKEN, SYSTEM_PROMPT, PromptSet, load_scorer_image, parse_styles
from mmssr_core.scoring.base import Failure, ScoreRequest, ScorerIdentity
from mmssr_core.scoring.http_transport import (  # noqa: F401 - BadStatus/Malformed re-exported for the teacher
    DEFAULT_MAX_BODY_BYTES,
    BadStatus,
    HttpTransport,
    Malformed,
    Replica,
    ReplicaPool,
)

_LOGPROB_SLACK = 1e-3  # servers round: a logprob of +1e-6 is a probability of 1


class OpenAIBackend:
    """Scoring backend over OpenAI-compatible chat completions (see the module docstring)."""

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        base_urls: Sequence[str] | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_reasks: int = 2,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        top_logprobs: int = 20,
        logprob_token_ids: str | Sequence[int] | bool = "auto",
        structured: str = "auto",
        image_format: str = "png",
        image_placement: str = "parts",
        max_style_tokens: int = 64,
        circuit_threshold: int = 3,
        circuit_cooldown: float = 5.0,
        circuit_max_cooldown: float = 60.0,
        revision: str = "",
        batch_size: int | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        verify_inputs: bool = True,
    ):
        urls = list(base_urls or []) + ([base_url] if base_url else [])
        if not urls:
            raise ValueError("the openai backend needs base_url or base_urls (e.g. http://localhost:8000/v1)")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if image_format.lower() not in ("png", "jpeg"):
            raise ValueError("image_format must be png or jpeg")
        if image_placement not in ("parts", "inline"):
            raise ValueError("image_placement must be 'parts' (image part where <image> stood) or 'inline'")
        if structured not in ("auto", "structured_outputs", "guided_regex", "none"):
            raise ValueError("structured must be auto, structured_outputs, guided_regex or none")
        self.model = model
        self.revision = revision
        self.verify_inputs = bool(verify_inputs)
        self._inputs_check: str | None = None
        self.api_key_env = api_key_env
        # An explicit key (e.g. resolved by Dagster from an EnvVar) wins over the environment variable.
        self._api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        self.transport = HttpTransport(
            urls,
            concurrency=concurrency,
            timeout=timeout,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            circuit_threshold=circuit_threshold,
            circuit_cooldown=circuit_cooldown,
            circuit_max_cooldown=circuit_max_cooldown,
            api_key=self._api_key,
            max_body_bytes=max_body_bytes,
        )
        self.pool = self.transport.pool
        self.counters = self.transport.counters
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_reasks = int(max_reasks)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.top_logprobs = int(top_logprobs)
        self.image_format = image_format.lower()
        self.image_placement = image_placement
        self.max_style_tokens = int(max_style_tokens)
        self.structured = structured
        self._send_structured = structured != "none"
        self._structured_key = "guided_regex" if structured == "guided_regex" else "structured_outputs"
        if logprob_token_ids is True:
            logprob_token_ids = "auto"
        self._digit_ids: list[int] | None = (
            list(logprob_token_ids) if isinstance(logprob_token_ids, (list, tuple)) else None
        )
        self._probe_ids = logprob_token_ids == "auto"
        self._lock = threading.Lock()
        n = len(self.pool.replicas)
        self.default_batch_size = batch_size or max(8, 2 * concurrency * n)
        self._executor = ThreadPoolExecutor(max_workers=concurrency * n, thread_name_prefix="mmssr-openai")

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, replicas={[r.display for r in self.pool.replicas]})"

    # -- identity ----------------------------------------------------------------------------
    def identity(self, prompts: PromptSet) -> ScorerIdentity:
        """Replica URLs are not part of the identity: replicas of one model are interchangeable.

        For the `reference` and `clean` profiles the server is asked once whether it feeds the reference
        inputs (`openai_input_check`); the answer, verified or unverified, is part of the identity.
        """
        extra = (("image", self.image_format), ("placement", self.image_placement))
        if prompts.profile.per_piece or prompts.profile.single_tile:
            extra += (("inputs", self._checked_inputs()),)
        return ScorerIdentity(
            backend="openai",
            model=self._resolve_model(),
            revision=self.revision,
            prompt_version=prompts.version,
            extra=extra,
        )

    def _checked_inputs(self) -> str:
        if self._inputs_check is None:
            from mmssr_core.scoring.openai_input_check import verify_reference_inputs

            if not self.verify_inputs:
                self._inputs_check = "unverified"
            else:
                self._inputs_check = verify_reference_inputs(
                    lambda body: self._request("POST", "/chat/completions", body, max_retries=1),
                    self._tokenize_text,
                    self._resolve_model(),
                )
        return self._inputs_check

    def _tokenize_text(self, text: str) -> list[int] | None:
        """vLLM's /tokenize of one piece of text (None when the server has no such endpoint)."""
        res = self._request(
            "POST",
            "/tokenize",
            {"model": self._resolve_model(), "prompt": text, "add_special_tokens": False},
            root=True,
            max_retries=1,
        )
        tokens = res.get("tokens") if isinstance(res, dict) else None
        return [int(t) for t in tokens] if isinstance(tokens, list) else None

    def _resolve_model(self) -> str:
        with self._lock:
            if self.model:
                return self.model
        data = self._request("GET", "/models", None)
        if isinstance(data, Failure):
            raise RuntimeError(f"cannot list the served models ({data.reason}: {data.message}); pass --model")
        try:
            model = data["data"][0]["id"]
        except (KeyError, IndexError, TypeError):
            raise RuntimeError("the server's /models answer names no model; pass --model") from None
        with self._lock:
            self.model = self.model or model
            return self.model

    # -- public transport for other clients of the same server (the teacher) -------------------
    def resolve_model(self) -> str:
        """The served model's name (asked from /models once when not configured)."""
        return self._resolve_model()

    def post_chat(self, body: dict) -> "dict | BadStatus | Malformed | Failure":
        """One chat completion through the retrying, replica-aware transport."""
        return self._request("POST", "/chat/completions", body)

    @property
    def replica_hosts(self) -> list[str]:
        return self.transport.replica_hosts

    @property
    def total_concurrency(self) -> int:
        return self.transport.total_concurrency

    # -- HTTP (the transport) ----------------------------------------------------------------
    def _request(
        self, method: str, path: str, body: dict | None, *, root: bool = False, max_retries: int | None = None
    ) -> Any:
        return self.transport.request(method, path, body, root=root, max_retries=max_retries)

    # -- digit token ids (vLLM logprob_token_ids) ----------------------------------------------
    def _digit_token_ids(self) -> list[int] | None:
        with self._lock:
            if not self._probe_ids:
                return self._digit_ids
            self._probe_ids = False
        ids: list[int] | None = []
        model = self._resolve_model()
        for d in DIGITS:
            res = self._request(
                "POST",
                "/tokenize",
                {"model": model, "prompt": d, "add_special_tokens": False},
                root=True,
                max_retries=1,
            )
            tokens = res.get("tokens") if isinstance(res, dict) else None
            if not isinstance(tokens, list) or len(tokens) != 1:
                ids = None  # no /tokenize, or a digit is not one token: rely on top_logprobs
                break
            ids.append(int(tokens[0]))
        with self._lock:
            self._digit_ids = ids
        return ids

    # -- payloads ----------------------------------------------------------------------------
    def _image_url(self, req: ScoreRequest) -> str | None | Failure:
        if not req.image_file:
            return None
        try:
            img = load_scorer_image(req.image_file)
            buf = io.BytesIO()
            if self.image_format == "jpeg":
                img.save(buf, format="JPEG", quality=95)
                mime = "image/jpeg"
            else:
                img.save(buf, format="PNG")
                mime = "image/png"
        except Exception as exc:  # noqa: BLE001 - any decode problem is this sample's failure
            return Failure("image_error", f"sample {req.sample_id!r}: cannot read {req.image_file}: {exc}")
        return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"

    def messages(self, req: ScoreRequest, query: str, image_url: str | None) -> list[dict]:
        """System prompt, then the user turn: the image part where `<image>` stood, text around it."""
        text = req.prefix + query
        if image_url is None:
            content: Any = [{"type": "text", "text": text.replace(IMAGE_TOKEN, "")}]
        else:
            image = {"type": "image_url", "image_url": {"url": image_url}}
            if self.image_placement == "inline":  # keep the literal <image>; servers in "string" mode place it
                content = [image, {"type": "text", "text": text}]
            else:
                before, sep, after = text.partition(IMAGE_TOKEN)
                if not sep:
                    before, after = "", text
                content = ([{"type": "text", "text": before}] if before else []) + [image]
                if after:
                    content.append({"type": "text", "text": after})
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def score_payload(self, req: ScoreRequest, query: str, image_url: str | None) -> dict:
        body = {
            "model": self.model,
            "messages": self.messages(req, query, image_url),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        ids = self._digit_token_ids()
        if ids:
            body["logprob_token_ids"] = ids
        return body

    def style_payload(self, req: ScoreRequest, prompts: PromptSet, image_url: str | None) -> dict:
        body = {
            "model": self.model,
            "messages": self.messages(req, prompts.style_query, image_url),
            "max_tokens": self.max_style_tokens,
            "temperature": 0.0,
        }
        if self._send_structured:
            regex = styles_regex(prompts.styles)
            if self._structured_key == "guided_regex":
                body["guided_regex"] = regex
            else:
                body["structured_outputs"] = {"regex": regex}
        return body

    # -- one query ---------------------------------------------------------------------------
    def _ask(self, make_body, parse) -> Any:
        """Send, parse, re-ask on malformed answers; drop an extension the server rejects."""
        self.counters.add("calls")
        detail = ""
        asks = 0
        fallbacks = 0
        while True:
            body = make_body()
            res = self._request("POST", "/chat/completions", body)
            if isinstance(res, Failure):
                self.counters.fail(res.reason)
                return res
            if isinstance(res, BadStatus):
                if res.status == 400 and fallbacks < 3 and self._drop_extension(body, res.message):
                    fallbacks += 1
                    continue
                f = Failure(
                    "http_401" if res.status in (401, 403) else f"http_{res.status}",
                    f"HTTP {res.status}: {res.message}",
                )
                self.counters.fail(f.reason)
                return f
            if isinstance(res, Malformed):
                detail = res.message
            else:
                out = parse(res)
                if not isinstance(out, str):
                    return out
                detail = out
            asks += 1
            if asks > self.max_reasks:
                self.counters.fail("malformed_answer")
                return Failure("malformed_answer", f"{detail} (asked {asks} times)")
            self.counters.add("reasks")

    def _drop_extension(self, body: dict, message: str) -> bool:
        """A 400 naming one of our vLLM extensions: stop sending it (remembered for later requests)."""
        with self._lock:
            if "logprob_token_ids" in body and "logprob_token_ids" in message:
                self._digit_ids = None
                return True
            if "structured_outputs" in body and "structured_outputs" in message:
                if self.structured == "auto":
                    self._structured_key = "guided_regex"
                else:
                    self._send_structured = False
                return True
            if "guided_regex" in body and "guided_regex" in message:
                self._send_structured = False
                return True
        return False

    def parse_digits(self, res: dict) -> np.ndarray | str:
        """Distribution over 0..5 from top_logprobs, or a string saying what is malformed."""
        try:
            entry = res["choices"][0]["logprobs"]["content"][0]
            tops = entry.get("top_logprobs") or []
        except (KeyError, IndexError, TypeError):
            return "answer lacks choices[0].logprobs.content[0]"
        ids = {f"token_id:{i}": DIGITS[k] for k, i in enumerate(self._digit_ids or [])}
        logps: dict[str, float] = {}
        for item in list(tops) + [entry]:
            try:
                tok, lp = item["token"], float(item["logprob"])
            except (KeyError, TypeError, ValueError, OverflowError):
                continue
            d = ids.get(tok, tok.strip() if isinstance(tok, str) else None)
            if d in DIGITS and math.isfinite(lp):
                if lp > _LOGPROB_SLACK:  # e.g. 1e308: exp() would overflow, and no probability exceeds 1
                    return f"logprob {lp!r} of digit {d!r} is not a log-probability (it must be <= 0)"
                if item is entry and d in logps:
                    continue  # the sampled token repeats a top entry
                logps[d] = float(np.logaddexp(logps[d], lp)) if d in logps else lp
        if not logps:
            shown = [t.get("token") for t in tops[:8] if isinstance(t, dict)]
            return f"no digit token 0..5 among top_logprobs {shown}"
        top = max(logps.values())  # renormalise in log space: tiny logprobs never underflow to all-zero
        probs = np.array([math.exp(logps[d] - top) if d in logps else 0.0 for d in DIGITS], dtype=np.float64)
        if probs.sum() <= 0:
            return "digit tokens carry no probability"
        return probs / probs.sum()

    def parse_style_answer(self, res: dict, labels: Sequence[str]) -> list[str] | str:
        try:
            text = res["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return "answer lacks choices[0].message.content"
        if not isinstance(text, str):
            return "answer content is not text"
        try:
            return parse_styles(text, labels)
        except ValueError as exc:
            return str(exc)

    # -- protocol ----------------------------------------------------------------------------
    def score_all(
        self,
        requests: Sequence[ScoreRequest],
        queries: Sequence[str],
        prompts: PromptSet,
        *,
        with_styles: bool = True,
    ) -> tuple[list[list[Any]], list[Any]]:
        """Scores and styles of a batch in one wave of concurrent requests (no barrier between them)."""
        self._resolve_model()
        self._digit_token_ids()
        # Images are prepared concurrently and each sample's requests go out as soon as its own image
        # is ready, so image preparation overlaps with serving instead of forming a barrier.
        image_futures = [self._executor.submit(self._image_url, req) for req in requests]
        futures_d: list[list[Any]] = []
        futures_s: list[Any] = []
        for req, img_future in zip(requests, image_futures):
            img = img_future.result()
            if isinstance(img, Failure):
                futures_d.append([img] * len(queries))
                futures_s.append(img if with_styles else None)
                continue
            futures_d.append(
                [
                    self._executor.submit(
                        self._ask, lambda req=req, q=q, img=img: self.score_payload(req, q, img), self.parse_digits
                    )
                    for q in queries
                ]
            )
            futures_s.append(
                self._executor.submit(
                    self._ask,
                    lambda req=req, img=img: self.style_payload(req, prompts, img),
                    lambda res: self.parse_style_answer(res, prompts.styles),
                )
                if with_styles
                else None
            )
        dists = [[f.result() if hasattr(f, "result") else f for f in row] for row in futures_d]
        styles = [f.result() if hasattr(f, "result") else f for f in futures_s]
        return dists, styles

    def digit_distributions(
        self, requests: Sequence[ScoreRequest], queries: Sequence[str], prompts: PromptSet
    ) -> list[list[Any]]:
        return self.score_all(requests, queries, prompts, with_styles=False)[0]

    def styles(self, requests: Sequence[ScoreRequest], prompts: PromptSet) -> list[Any]:
        return self.score_all(requests, [], prompts, with_styles=True)[1]

    def stats(self) -> dict:
        """Per-replica and overall counters (for tests, benchmarks and logs; never the key)."""
        c = self.counters
        with c.lock:
            overall = {
                "calls": c.calls,
                "attempts": c.attempts,
                "retries": c.retries,
                "reasks": c.reasks,
                "failures": dict(c.failures),
            }
        with self.pool.cond:
            overall["replicas"] = [r.stats() for r in self.pool.replicas]
        return overall

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.transport.close()


def _regex_literal(text: str) -> str:
    # escape only what is special, so every structured-output engine (xgrammar, outlines, guidance) agrees
    return re.sub(r"([\\.^$*+?{}\[\]|()])", r"\\\1", text)


def styles_regex(labels: Sequence[str]) -> str:
    """A comma-separated list of one or more labels (what structured outputs constrain the styler to)."""
    one = "(" + "|".join(_regex_literal(s) for s in sorted(labels, key=len, reverse=True)) + ")"
    return f"{one}(, {one})*"
