"""A small local OpenAI-compatible server that answers like vLLM, for tests and benchmarks.

It serves `/v1/chat/completions`, `/v1/models` and `/tokenize` on 127.0.0.1 with deterministic answers:
a score query gets a digit distribution derived from a hash of the request text (`intended_distribution`),
the style query gets a comma-separated label list derived the same way. Faults can be injected (5xx, 429,
a delay beyond the client's timeout, dropped connections, malformed bodies, answers without digits), a
fixed service rate can be set (a replica that serves N requests/s whatever the concurrency), and it counts
what it served. No dependency beyond the standard library and numpy.

    with TestServer() as srv:
        srv.inject("http_503", count=2)
        backend = OpenAIBackend(base_url=srv.url, model=srv.model)
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import math
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np

from mmssr_core.prompts import DIGITS, IMAGE_TOKEN

FAULTS = (
    "http_500",
    "http_502",
    "http_503",
    "http_429",
    "http_400",
    "http_401",
    "delay",  # answer only after `fault_delay` seconds (beyond the client timeout)
    "drop",  # close the connection without any response
    "non_json",  # 200 with an HTML body
    "missing_fields",  # 200 with JSON lacking choices[0].logprobs / message
    "no_digits",  # 200 with top_logprobs that hold no digit token
    "bad_style",  # 200 with a style answer holding no known label
)
DIGIT_TOKEN_ID0 = 15  # like Qwen2: "0" is token 15, "1" is 16, ...
FILLERS = ("6", "7", "8", "9", " ", "The", "\n", "I", "A", "**", "Score", "N", "-", "The score", "#")


def request_text(messages: list[dict]) -> str:
    """The user turn's text with the image part shown as `<image>`: what the distribution hashes."""
    out = []
    for m in messages:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                out.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                out.append(IMAGE_TOKEN)
    return "".join(out)


def _seed(text: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))


def intended_distribution(text: str) -> np.ndarray:
    """The digit distribution the server means for this request text (sums to 1)."""
    logits = _seed(text).normal(0.0, 1.5, size=len(DIGITS))
    p = np.exp(logits - logits.max())
    return p / p.sum()


def intended_styles(text: str, labels: list[str]) -> list[str]:
    rng = _seed("styles\0" + text)
    k = int(rng.integers(1, 4))
    idx = rng.permutation(len(labels))[:k]
    return [labels[i] for i in idx]


def _style_labels(text: str) -> list[str] | None:
    m = re.search(r"Interaction style candidates: \[(.*)\]\nStyles: $", text, re.S)
    return [s for s in m.group(1).split(", ")] if m else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: "_Server"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, False)

    # -- plumbing ----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._json(status, {"object": "error", "message": message, "type": "BadRequestError", "code": status}, headers)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- routes ------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        owner = self.server.owner
        if owner.stopped:
            return self._drop()
        if self.path.rstrip("/").endswith("/v1/models"):
            return self._json(
                200, {"object": "list", "data": [{"id": owner.model, "object": "model", "owned_by": "vllm"}]}
            )
        if self.path.rstrip("/") in ("/health", "/v1/health"):
            return self._send(200, b"", "text/plain")
        self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if owner.stopped:
            return self._drop()
        path = self.path.rstrip("/")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._error(400, "request body is not JSON")
        if path.endswith("/tokenize"):
            return self._tokenize(body)
        if not path.endswith("/v1/chat/completions"):
            return self._error(404, f"no route {self.path}")
        owner._record(body, dict(self.headers))
        owner._enter()
        try:
            self._chat(body)
        finally:
            owner._leave()

    def _chat(self, body: dict) -> None:
        owner = self.server.owner
        if owner.api_key is not None and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            return self._error(401, "invalid API key")
        if body.get("return_token_ids"):
            kind = "probe"  # the client asking which inputs the server feeds (openai_input_check)
        else:
            kind = "style" if _style_labels(request_text(body.get("messages") or [])) else "score"
        fault = owner._take_fault(kind, body)
        owner._pace()
        if fault:
            owner._count_fault(fault)
            return self._fault(fault, kind, body)
        self._complete(body, kind)

    def _tokenize(self, body: dict) -> None:
        owner = self.server.owner
        if not owner.tokenize:
            return self._error(404, "no route /tokenize")
        text = body.get("prompt", "")
        tokens = [DIGIT_TOKEN_ID0 + int(ch) if ch.isdigit() else 1000 + ord(ch) for ch in text]
        self._json(200, {"count": len(tokens), "max_model_len": 32768, "tokens": tokens})

    def _fault(self, fault: str, kind: str, body: dict) -> None:
        owner = self.server.owner
        if fault.startswith("http_"):
            status = int(fault[5:])
            headers = {"Retry-After": "0"} if status == 429 else None
            return self._error(status, f"injected {fault}", headers)
        if fault == "drop":
            return self._drop()
        if fault == "delay":
            owner._stop_event.wait(owner.fault_delay)
            return self._complete(body, kind)
        if fault == "non_json":
            return self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        if fault == "missing_fields":
            return self._json(200, {"id": "x", "object": "chat.completion", "choices": [{"index": 0}]})
        if fault == "no_digits":
            return self._complete(body, kind, no_digits=True)
        if fault == "bad_style":
            return self._complete(body, kind, style_text="banana, kiwi")
        raise AssertionError(fault)

    def _complete(self, body: dict, kind: str, no_digits: bool = False, style_text: str | None = None) -> None:
        owner = self.server.owner
        if owner.strict_params:
            unknown = [k for k in body if k not in _OPENAI_PARAMS]
            if unknown:
                return self._error(400, f"Unrecognized request argument supplied: {', '.join(sorted(unknown))}")
        if owner.latency:
            owner._stop_event.wait(owner.latency)
        text = request_text(body.get("messages") or [])
        if kind == "style":
            labels = _style_labels(text) or []
            answer = style_text if style_text is not None else ", ".join(intended_styles(text, labels))
            regex = (body.get("structured_outputs") or {}).get("regex") or body.get("guided_regex")
            if regex and style_text is None and not re.fullmatch(regex, answer):
                return self._error(400, f"answer {answer!r} does not match the requested regex")
            owner._served(kind)
            return self._json(200, _chat_response(owner.model, answer, None))
        if not body.get("logprobs"):
            owner._served(kind)
            return self._json(200, _chat_response(owner.model, str(int(np.argmax(intended_distribution(text)))), None))
        dist = intended_distribution(text)
        vocab: list[tuple[str, int, float]] = []  # token, id, prob
        for d, p in enumerate(dist):
            vocab.append((DIGITS[d], DIGIT_TOKEN_ID0 + d, owner.digit_mass * float(p)))
        rest = 1.0 - owner.digit_mass
        weights = np.array([0.5**i for i in range(len(FILLERS))])
        for tok, w in zip(FILLERS, weights / weights.sum()):
            vocab.append((tok, 2000 + len(vocab), rest * float(w)))
        if no_digits:
            vocab = [v for v in vocab if v[0] not in DIGITS]
        vocab.sort(key=lambda v: -v[2])
        k = min(int(body.get("top_logprobs") or 0), owner.top_k_cap)
        sampled = vocab[0]
        top = vocab[:k]
        ids = body.get("logprob_token_ids")
        if ids and owner.logprob_token_ids == "honour" and not no_digits:
            by_id = {v[1]: v for v in vocab}
            top = [sampled] + [by_id[i] for i in ids if i in by_id and by_id[i] is not sampled]
        elif ids and owner.logprob_token_ids == "reject":
            return self._error(400, "logprob_token_ids is not supported by this server")
        owner._served(kind)
        self._json(200, _chat_response(owner.model, sampled[0], (sampled, top)))


_OPENAI_PARAMS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "logprobs",
    "top_logprobs",
    "stream",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "response_format",
}


def _lp(p: float) -> float:
    return math.log(p) if p > 0 else -9999.0


def _chat_response(model: str, content: str, logprobs: tuple | None) -> dict:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content, "reasoning_content": None, "tool_calls": []},
        "logprobs": None,
        "finish_reason": "length" if logprobs else "stop",
        "stop_reason": None,
    }
    if logprobs:
        sampled, top = logprobs
        entry = lambda v: {"token": v[0], "logprob": _lp(v[2]), "bytes": list(v[0].encode())}  # noqa: E731
        choice["logprobs"] = {"content": [dict(entry(sampled), top_logprobs=[entry(v) for v in top])]}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": 100, "total_tokens": 101, "completion_tokens": 1},
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    owner: "TestServer"


class TestServer:
    """A vLLM-shaped OpenAI-compatible server on 127.0.0.1 (see module docstring).

    Options: `latency` (seconds added to every completion, in parallel), `rate` (completions per second this
    replica can serve, queued FIFO: the scale-out benchmark's fixed service rate), `api_key` (require this
    Bearer token), `logprob_token_ids` ("honour" like vLLM >= 0.2x, "ignore" like older servers, "reject"),
    `strict_params` (reject non-OpenAI parameters with 400, like api.openai.com), `top_k_cap` (at most this
    many top_logprobs), `digit_mass` (probability mass on the digit tokens), `fault_delay` (seconds a
    "delay" fault waits), `tokenize` (serve vLLM's /tokenize).
    """

    __test__ = False  # not a pytest test class

    handler_class: type = None  # set below to _Handler; subclasses answer other protocols

    def __init__(
        self,
        *,
        model: str = "test-scorer",
        port: int = 0,
        latency: float = 0.0,
        rate: float | None = None,
        api_key: str | None = None,
        logprob_token_ids: str = "honour",
        strict_params: bool = False,
        top_k_cap: int = 20,
        digit_mass: float = 0.9,
        fault_delay: float = 5.0,
        tokenize: bool = True,
        keep_requests: int = 200,
    ):
        self.model = model
        self.latency = latency
        self.rate = rate
        self.api_key = api_key
        self.logprob_token_ids = logprob_token_ids
        self.strict_params = strict_params
        self.top_k_cap = top_k_cap
        self.digit_mass = digit_mass
        self.fault_delay = fault_delay
        self.tokenize = tokenize
        self._port = port
        self._lock = threading.Lock()
        self._faults: list[list] = []  # [kind, remaining, when]
        self._stop_event = threading.Event()
        self._next_free = 0.0
        self._conns: set = set()
        self.stopped = True
        self.requests = 0  # chat completion requests received
        self.in_flight = 0
        self.max_in_flight = 0  # most chat requests handled at once
        self.served = collections.Counter()  # kind (score|style) -> successful answers
        self.faults_served = collections.Counter()
        self.recent: collections.deque = collections.deque(maxlen=keep_requests)  # (body, headers)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "TestServer":
        self._httpd = _Server(("127.0.0.1", self._port), self.handler_class)
        self._httpd.owner = self
        self._port = self._httpd.server_address[1]
        self._stop_event.clear()
        self.stopped = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a killed process: refuse new connections and cut open ones (port kept for restart)."""
        if self._httpd is None:
            return
        self.stopped = True
        self._stop_event.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd = None

    kill = stop

    def restart(self) -> "TestServer":
        """Come back on the same port (a recovered replica)."""
        self.stop()
        return self.start()

    def __enter__(self) -> "TestServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    # -- faults ------------------------------------------------------------------------------
    def inject(self, fault: str, count: int = 1, when: str | Callable[[dict], bool] | None = None) -> None:
        """The next `count` chat requests (of kind `when`: "score", "style" or a predicate) get `fault`.

        count=-1 means every matching request until `clear_faults()`.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose one of {FAULTS}")
        with self._lock:
            self._faults.append([fault, count, when])

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, kind: str, body: dict) -> str | None:
        with self._lock:
            for f in self._faults:
                fault, remaining, when = f
                if when is not None and (when != kind if isinstance(when, str) else not when(body)):
                    continue
                if remaining > 0:
                    f[1] -= 1
                    if f[1] == 0:
                        self._faults.remove(f)
                return fault
        return None

    # -- accounting --------------------------------------------------------------------------
    def _record(self, body: dict, headers: dict) -> None:
        with self._lock:
            self.requests += 1
            self.recent.append((body, headers))

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _served(self, kind: str) -> None:
        with self._lock:
            self.served[kind] += 1

    def _count_fault(self, fault: str) -> None:
        with self._lock:
            self.faults_served[fault] += 1

    def _track(self, conn, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _pace(self) -> None:
        """Fixed service rate: each completion takes a 1/rate slot of a FIFO queue."""
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_free)
            self._next_free = start + 1.0 / self.rate
            until = self._next_free
        self._stop_event.wait(max(0.0, until - time.monotonic()))

    @property
    def total_served(self) -> int:
        """Score and style answers (the client's input probe not included)."""
        return sum(n for kind, n in self.served.items() if kind != "probe")

    def reset_counters(self) -> None:
        with self._lock:
            self.requests = 0
            self.max_in_flight = 0
            self.served.clear()
            self.faults_served.clear()
            self.recent.clear()


def decode_data_url(url: str) -> tuple[str, bytes]:
    """(mime type, bytes) of a data URL: lets tests check what image the client sent."""
    m = re.match(r"data:([^;]+);base64,(.*)$", url, re.S)
    if not m:
        raise ValueError("not a base64 data URL")
    return m.group(1), base64.b64decode(m.group(2))


TestServer.handler_class = _Handler
