"""The HTTP transport of OpenAI-compatible clients: replicas, retries, backoff, and hard limits.

Standard library only (http.client + threads), so the base install stays light. Why not httpx or urllib3:
both time out per socket read, not per request, so a server dripping one byte every two seconds never
times out there either; the limits below are what a hostile or broken server needs, and they are
enforced here whatever the socket does:
- a whole-request deadline (`timeout`: connect, send, wait and read together), enforced by a watchdog
  that shuts the socket down when it passes, so neither a slow header nor a dripping body can hold a
  worker past it;
- a response body cap (`max_body_bytes`): a larger answer is refused after reading at most the cap
  (at once when its Content-Length says so), never held in memory;
- retries with exponential backoff and jitter on connection errors, timeouts, 429 and 5xx (Retry-After
  honoured); replicas spread least-loaded with a circuit breaker (a replica failing repeatedly leaves the
  rotation for a cooldown and is probed back in);
- secrets: the API key (or `user:password@` credentials in a base URL, sent as basic auth) never appears
  in a message: URLs are shown without credentials and every error text passes through `redact`.
"""

from __future__ import annotations

import base64
import heapq
import http.client
import itertools
import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mmssr_core.redact import redact, register_secret
from mmssr_core.scoring.base import Failure
from mmssr_core.scoring.replicas import NoReplica, Replica, ReplicaPool

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # a chat completion is kilobytes; 32 MB leaves room for anything sane
_READ_CHUNK = 65536

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    def __init__(self, reason: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


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


@dataclass
class BadStatus:
    """A non-retryable HTTP error answer (4xx other than 429)."""

    status: int
    message: str


@dataclass
class Malformed:
    """A 200 answer whose body is not JSON."""

    message: str


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_text(data: bytes) -> str:
    """What an error body says, short and redacted (servers echo headers and URLs back)."""
    try:
        obj = json.loads(data[:_READ_CHUNK])
        if isinstance(obj, dict):
            err = obj.get("error", obj)
            msg = err.get("message") if isinstance(err, dict) else err
            return redact(str(msg)[:2000])[:300]
    except (ValueError, RecursionError):
        pass
    return redact(data[:2000].decode("utf-8", "replace"))[:200]


class _Watchdog:
    """One thread that runs callbacks at deadlines: shuts down the socket of a request past its deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def at(self, when: float, callback: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._ids)
            heapq.heappush(self._heap, (when, token, callback))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mmssr-http-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def cancel(self, token: int) -> None:
        with self._cond:
            self._cancelled.add(token)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else 60.0
                    if not self._cond.wait(max(0.001, wait)) and not self._heap:
                        self._thread = None
                        return  # idle for a minute: the next request starts a new one
                when, token, callback = heapq.heappop(self._heap)
                if token in self._cancelled:
                    self._cancelled.discard(token)
                    continue
            try:
                callback()
            except OSError:
                pass


_WATCHDOG = _Watchdog()


class _TooLarge(Exception):
    pass


class _DeadlinePassed(Exception):
    pass


class HttpTransport:
    """JSON requests to a set of replicas of one OpenAI-compatible server, with the limits above."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        circuit_threshold: int = 3,
        circuit_cooldown: float = 5.0,
        circuit_max_cooldown: float = 60.0,
        api_key: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ):
        if timeout <= 0 or max_body_bytes < 1:
            raise ValueError("timeout and max_body_bytes must be positive")
        self.pool = ReplicaPool(urls, concurrency, circuit_threshold, circuit_cooldown, circuit_max_cooldown)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_body_bytes = int(max_body_bytes)
        self._api_key = api_key
        register_secret(api_key)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._rng = random.Random()
        self.counters = _Counters()

    # -- connections ---------------------------------------------------------------------------
    def _headers(self, r: Replica) -> dict:
        h = {"Content-Type": "application/json", "Accept": "application/json", "Connection": "keep-alive"}
        if self._api_key:
            h["Authorization"] = f"Bearer {self._api_key}"
        elif r.basic_auth is not None:
            h["Authorization"] = "Basic " + base64.b64encode(r.basic_auth.encode()).decode()
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
        conn = getattr(self._local, "conns", {}).pop(r.url, None)
        if conn is not None:
            conn.close()

    # -- one attempt -----------------------------------------------------------------------------
    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        r: Replica,
        method: str,
        path: str,
        payload: bytes | None,
        deadline: float,
    ) -> tuple[int, dict, bytes]:
        """Send and read one request on `conn` within `deadline` (monotonic) and the body cap."""
        conn.timeout = max(0.001, deadline - time.monotonic())
        if conn.sock is not None:
            conn.sock.settimeout(conn.timeout)
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            sock = conn.sock
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv, whatever the server drips

        token = _WATCHDOG.at(deadline, expire)
        try:
            conn.request(method, path, body=payload, headers=self._headers(r))
            resp = conn.getresponse()
            length = resp.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                raise _TooLarge(f"{int(length):,} bytes announced")
            chunks, size = [], 0
            while True:
                chunk = resp.read(_READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise _TooLarge(f"over {self.max_body_bytes:,} bytes read")
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise _DeadlinePassed()
        except (OSError, http.client.HTTPException):
            if fired.is_set():
                raise _DeadlinePassed() from None
            raise
        finally:
            _WATCHDOG.cancel(token)
        if fired.is_set():
            raise _DeadlinePassed()
        if resp.getheader("Connection", "").lower() == "close":
            self._drop_connection(r)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"".join(chunks)

    def _http_once(self, r: Replica, method: str, path: str, payload: bytes | None) -> tuple[int, dict, bytes]:
        deadline = time.monotonic() + self.timeout
        conn, reused = self._connection(r)
        try:
            return self._exchange(conn, r, method, path, payload, deadline)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self._drop_connection(r)
            if not reused:
                raise
            # a kept-alive connection the server had already closed: one fresh try, not a failure
            conn, _ = self._connection(r, fresh=True)
            try:
                return self._exchange(conn, r, method, path, payload, deadline)
            except BaseException:
                self._drop_connection(r)
                raise
        except BaseException:
            self._drop_connection(r)
            raise

    # -- one logical request ---------------------------------------------------------------------
    def request(
        self, method: str, path: str, body: dict | None, *, root: bool = False, max_retries: int | None = None
    ) -> Any:
        """One logical request with retries/backoff over the replicas. Returns the parsed JSON (dict),
        a `BadStatus` for a non-retryable HTTP error, `Malformed` for a 200 that is not JSON, or a Failure."""
        payload = json.dumps(body).encode() if body is not None else None
        attempt = 0
        last: Replica | None = None
        while True:
            self.counters.add("attempts")
            outcome = self._attempt(method, path, payload, root, last)
            if not isinstance(outcome, tuple):
                return outcome
            err, last = outcome
            attempt += 1
            if attempt > (self.max_retries if max_retries is None else max_retries):
                return Failure(err.reason, f"{err.message} (gave up after {attempt} attempts)")
            self.counters.add("retries")
            delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            delay = self._rng.uniform(delay / 2, delay)  # jitter
            if err.retry_after is not None:
                delay = max(delay, min(err.retry_after, self.backoff_max))
            time.sleep(delay)

    def _attempt(self, method: str, path: str, payload: bytes | None, root: bool, last: Replica | None) -> Any:
        """One attempt: the final answer, or (a retryable error, the replica tried)."""
        try:
            r = self.pool.acquire(avoid=last, wait=self.timeout)
        except NoReplica as exc:
            return _Retryable("connection_error", str(exc)), last
        full = (r.prefix.rsplit("/v1", 1)[0] if root else r.prefix) + path
        try:
            status, headers, data = self._http_once(r, method, full, payload)
        except _TooLarge as exc:
            self.pool.release(r, "ok")  # the server answered; the answer is the problem
            return Failure(
                "response_too_large",
                f"{r.display} answered with a body too large ({exc}); the limit is {self.max_body_bytes:,} bytes",
            )
        except (_DeadlinePassed, socket.timeout, TimeoutError):
            self.pool.release(r, "fail")
            return _Retryable("timeout", f"no complete answer from {r.display} within {self.timeout:g}s"), r
        except (OSError, http.client.HTTPException) as exc:
            self.pool.release(r, "fail")
            return _Retryable("connection_error", redact(f"{r.display}: {type(exc).__name__}: {exc}")), r
        except BaseException:
            self.pool.release(r, "fail")
            raise
        if status in RETRYABLE_STATUS:
            reason = "http_429" if status == 429 else f"http_{status // 100}xx"
            self.pool.release(r, "ok" if status == 429 else "fail")  # busy is not broken
            return _Retryable(
                reason,
                f"{r.display} answered HTTP {status}: {_error_text(data)}",
                _retry_after(headers.get("retry-after")),
            ), r
        self.pool.release(r, "ok")
        if status >= 400:
            return BadStatus(status, _error_text(data))
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            return Malformed(redact(f"HTTP {status} body is not JSON: {data[:80]!r}"))

    # -- the rest --------------------------------------------------------------------------------
    @property
    def replica_hosts(self) -> list[str]:
        return [r.host for r in self.pool.replicas]

    @property
    def total_concurrency(self) -> int:
        return sum(r.limit for r in self.pool.replicas)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except OSError:
                pass
