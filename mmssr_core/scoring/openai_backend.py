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

Robustness: bounded concurrency per replica; timeouts; retries with exponential backoff and jitter on
connection errors, timeouts, 429 and 5xx (Retry-After honoured); malformed answers re-asked a bounded
number of times, then a `Failure` with the reason; replicas spread least-loaded, a replica failing
repeatedly is taken out of rotation for a cooldown (circuit breaker) and probed back in. The API key comes
from an environment variable and is never logged or put in a message.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import os
import random
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from mmssr_core.prompts import DIGITS, IMAGE_TOKEN, SYSTEM_PROMPT, PromptSet, load_scorer_image, parse_styles
from mmssr_core.scoring.base import Failure, ScoreRequest, ScorerIdentity

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    def __init__(self, reason: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class _NoReplica(Exception):
    pass


@dataclass
class Replica:
    """One base URL, its load and its health (the circuit breaker state)."""

    url: str
    limit: int
    scheme: str = "http"
    host: str = ""
    port: int = 80
    prefix: str = ""  # path prefix, e.g. /v1
    in_flight: int = 0
    requests: int = 0  # attempts sent
    served: int = 0  # 2xx answers
    failures: int = 0  # connection errors, timeouts, 5xx, 429
    consecutive: int = 0
    open_until: float = 0.0  # circuit open (out of rotation) until this monotonic time
    trips: int = 0
    probing: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL {self.url!r} must look like http://host:port/v1")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")

    def stats(self) -> dict:
        return {
            "url": self.url,
            "requests": self.requests,
            "served": self.served,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "trips": self.trips,
            "open": self.open_until > time.monotonic(),
        }


class ReplicaPool:
    """Least-loaded choice among healthy replicas, per-replica concurrency, circuit breaking."""

    def __init__(self, urls: Sequence[str], limit: int, threshold: int, cooldown: float, max_cooldown: float):
        self.replicas = [Replica(u.rstrip("/"), limit) for u in urls]
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.cond = threading.Condition()
        self._rr = 0

    def acquire(self, avoid: Replica | None = None, wait: float = 60.0) -> Replica:
        """A replica with a free slot. While every replica is out of rotation (or being probed), wait up to
        `wait` seconds for one to come back (its cooldown ending) before giving up with _NoReplica."""
        deadline = time.monotonic() + wait
        with self.cond:
            while True:
                now = time.monotonic()
                usable = []
                for r in self.replicas:
                    if r.open_until > now:
                        continue
                    half_open = r.trips > 0 and r.consecutive >= self.threshold
                    if half_open and r.probing:
                        continue
                    usable.append((r, half_open))
                if not usable:
                    if now >= deadline:
                        raise _NoReplica("no replica available: every replica is out of rotation after failures")
                    reopen = min((r.open_until for r in self.replicas if r.open_until > now), default=now + 0.05)
                    self.cond.wait(max(0.001, min(deadline, reopen) - now))
                    continue
                free = [(r, h) for r, h in usable if r.in_flight < r.limit]
                if free:
                    if avoid is not None and len(free) > 1:
                        free = [(r, h) for r, h in free if r is not avoid] or free
                    self._rr += 1
                    n = len(self.replicas)
                    r, half_open = min(
                        free, key=lambda rh: (rh[0].in_flight / rh[0].limit, (self.replicas.index(rh[0]) - self._rr) % n)
                    )
                    r.in_flight += 1
                    r.requests += 1
                    if half_open:
                        r.probing = True
                    return r
                self.cond.wait(0.5)

    def release(self, r: Replica, outcome: str) -> None:
        """outcome: ok (any HTTP answer that is not a server-side failure), fail (counts against health)."""
        with self.cond:
            r.in_flight -= 1
            r.probing = False
            if outcome == "ok":
                r.served += 1
                r.consecutive = 0
                r.trips = 0
                r.open_until = 0.0
            else:
                r.failures += 1
                r.consecutive += 1
                if r.consecutive >= self.threshold:
                    r.trips += 1
                    r.open_until = time.monotonic() + min(self.cooldown * 2 ** (r.trips - 1), self.max_cooldown)
            self.cond.notify_all()


@dataclass
class _Counters:
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: int = 0  # logical requests (one per sample x query)
    attempts: int = 0
    retries: int = 0
    reasks: int = 0
    failures: dict = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def fail(self, reason: str) -> None:
        with self.lock:
            self.failures[reason] = self.failures.get(reason, 0) + 1


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
        self.pool = ReplicaPool(urls, concurrency, circuit_threshold, circuit_cooldown, circuit_max_cooldown)
        self.model = model
        self.revision = revision
        self.api_key_env = api_key_env
        # An explicit key (e.g. resolved by Dagster from an EnvVar) wins over the environment variable.
        self._api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
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
        self._digit_ids: list[int] | None = list(logprob_token_ids) if isinstance(logprob_token_ids, (list, tuple)) else None
        self._probe_ids = logprob_token_ids == "auto"
        self._lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._rng = random.Random()
        self.counters = _Counters()
        n = len(self.pool.replicas)
        self.default_batch_size = batch_size or max(8, 2 * concurrency * n)
        self._executor = ThreadPoolExecutor(max_workers=concurrency * n, thread_name_prefix="mmssr-openai")

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, replicas={[r.url for r in self.pool.replicas]})"

    # -- identity ----------------------------------------------------------------------------
    def identity(self, prompts: PromptSet) -> ScorerIdentity:
        """Replica URLs are not part of the identity: replicas of one model are interchangeable."""
        return ScorerIdentity(
            backend="openai",
            model=self._resolve_model(),
            revision=self.revision,
            prompt_version=prompts.version,
            extra=(("image", self.image_format), ("placement", self.image_placement)),
        )

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
        return [r.host for r in self.pool.replicas]

    @property
    def total_concurrency(self) -> int:
        return sum(r.limit for r in self.pool.replicas)

    # -- HTTP --------------------------------------------------------------------------------
    def _headers(self) -> dict:
        h = {"Content-Type": "application/json", "Accept": "application/json", "Connection": "keep-alive"}
        if self._api_key:
            h["Authorization"] = f"Bearer {self._api_key}"
        return h

    def _connection(self, r: Replica, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(r.url)
        if conn is not None and not fresh:
            return conn, True
        if conn is not None:
            conn.close()
        cls = http.client.HTTPSConnection if r.scheme == "https" else http.client.HTTPConnection
        conn = cls(r.host, r.port, timeout=self.timeout)
        conns[r.url] = conn
        with self._lock:
            self._conns.append(conn)
        return conn, False

    def _drop_connection(self, r: Replica) -> None:
        conns = getattr(self._local, "conns", {})
        conn = conns.pop(r.url, None)
        if conn is not None:
            conn.close()

    def _http_once(self, r: Replica, method: str, path: str, payload: bytes | None) -> tuple[int, dict, bytes]:
        conn, reused = self._connection(r)
        try:
            conn.request(method, path, body=payload, headers=self._headers())
            resp = conn.getresponse()
            data = resp.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            self._drop_connection(r)
            if not reused:
                raise
            # a kept-alive connection the server had already closed: one fresh try, not a failure
            conn, _ = self._connection(r, fresh=True)
            try:
                conn.request(method, path, body=payload, headers=self._headers())
                resp = conn.getresponse()
                data = resp.read()
            except BaseException:
                self._drop_connection(r)
                raise
            del exc
        except BaseException:
            self._drop_connection(r)
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self._drop_connection(r)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def _request(self, method: str, path: str, body: dict | None, *, root: bool = False,
                 max_retries: int | None = None) -> Any:
        """One logical request with retries/backoff over the replicas. Returns the parsed JSON (dict),
        a `BadStatus` for a non-retryable HTTP error, `Malformed` for a 200 that is not JSON, or a Failure."""
        payload = json.dumps(body).encode() if body is not None else None
        attempt = 0
        last: Replica | None = None
        while True:
            self.counters.add("attempts")
            retry_after = None
            try:
                r = self.pool.acquire(avoid=last, wait=self.timeout)
            except _NoReplica as exc:
                err = _Retryable("connection_error", str(exc))
            else:
                last = r
                full = (r.prefix.rsplit("/v1", 1)[0] if root else r.prefix) + path
                outcome = "fail"
                try:
                    status, headers, data = self._http_once(r, method, full, payload)
                except (socket.timeout, TimeoutError):
                    err = _Retryable("timeout", f"no answer from {r.url} within {self.timeout:g}s")
                except (OSError, http.client.HTTPException) as exc:
                    err = _Retryable("connection_error", f"{r.url}: {type(exc).__name__}: {exc}")
                else:
                    if status in RETRYABLE_STATUS:
                        reason = "http_429" if status == 429 else f"http_{status // 100}xx"
                        retry_after = _retry_after(headers.get("retry-after"))
                        err = _Retryable(reason, f"{r.url} answered HTTP {status}: {_error_text(data)}", retry_after)
                        if status == 429:
                            outcome = "ok"  # busy, not broken: keep it in rotation
                    else:
                        outcome = "ok"
                        if status >= 400:
                            return BadStatus(status, _error_text(data))
                        try:
                            return json.loads(data)
                        except ValueError:
                            return Malformed(f"HTTP {status} body is not JSON: {data[:80]!r}")
                finally:
                    self.pool.release(r, outcome)
            attempt += 1
            if attempt > (self.max_retries if max_retries is None else max_retries):
                return Failure(err.reason, f"{err.message} (gave up after {attempt} attempts)")
            self.counters.add("retries")
            delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            delay = self._rng.uniform(delay / 2, delay)  # jitter
            if err.retry_after is not None:
                delay = max(delay, min(err.retry_after, self.backoff_max))
            time.sleep(delay)

    # -- digit token ids (vLLM logprob_token_ids) ----------------------------------------------
    def _digit_token_ids(self) -> list[int] | None:
        with self._lock:
            if not self._probe_ids:
                return self._digit_ids
            self._probe_ids = False
        ids: list[int] | None = []
        model = self._resolve_model()
        for d in DIGITS:
            res = self._request("POST", "/tokenize", {"model": model, "prompt": d, "add_special_tokens": False},
                                root=True, max_retries=1)
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
                f = Failure("http_401" if res.status in (401, 403) else f"http_{res.status}",
                            f"HTTP {res.status}: {res.message}")
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
            except (KeyError, TypeError, ValueError):
                continue
            d = ids.get(tok, tok.strip() if isinstance(tok, str) else None)
            if d in DIGITS and math.isfinite(lp):
                if item is entry and d in logps:
                    continue  # the sampled token repeats a top entry
                logps[d] = float(np.logaddexp(logps[d], lp)) if d in logps else lp
        if not logps:
            shown = [t.get("token") for t in tops[:8] if isinstance(t, dict)]
            return f"no digit token 0..5 among top_logprobs {shown}"
        probs = np.array([math.exp(logps[d]) if d in logps else 0.0 for d in DIGITS], dtype=np.float64)
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
            futures_d.append([
                self._executor.submit(
                    self._ask, lambda req=req, q=q, img=img: self.score_payload(req, q, img), self.parse_digits
                )
                for q in queries
            ])
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
            overall = {"calls": c.calls, "attempts": c.attempts, "retries": c.retries, "reasks": c.reasks,
                       "failures": dict(c.failures)}
        with self.pool.cond:
            overall["replicas"] = [r.stats() for r in self.pool.replicas]
        return overall

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except OSError:
                pass


@dataclass
class BadStatus:
    """A non-retryable HTTP error answer (4xx other than 429)."""

    status: int
    message: str


@dataclass
class Malformed:
    """A 200 answer whose body is not JSON."""

    message: str


def _regex_literal(text: str) -> str:
    # escape only what is special, so every structured-output engine (xgrammar, outlines, guidance) agrees
    return re.sub(r"([\\.^$*+?{}\[\]|()])", r"\\\1", text)


def styles_regex(labels: Sequence[str]) -> str:
    """A comma-separated list of one or more labels (what structured outputs constrain the styler to)."""
    one = "(" + "|".join(_regex_literal(s) for s in sorted(labels, key=len, reverse=True)) + ")"
    return f"{one}(, {one})*"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_text(data: bytes) -> str:
    try:
        obj = json.loads(data)
        if isinstance(obj, dict):
            err = obj.get("error", obj)
            msg = err.get("message") if isinstance(err, dict) else err
            return str(msg)[:300]
    except ValueError:
        pass
    return data[:200].decode("utf-8", "replace")
