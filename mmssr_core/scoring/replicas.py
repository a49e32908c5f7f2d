"""Replicas of one server: least-loaded choice, per-replica concurrency, and a circuit breaker.

A replica failing `threshold` times in a row leaves the rotation for a cooldown (doubling with each trip,
up to `max_cooldown`), then one probe request decides whether it comes back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import unquote, urlsplit

from mmssr_core.redact import redact_url, register_secret


class NoReplica(Exception):
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
    display: str = ""  # the URL without credentials: what messages show
    basic_auth: str | None = None  # "user:password" from the URL, sent as basic auth

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.display = redact_url(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL {self.display!r} must look like http://host:port/v1")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        if parts.username is not None:
            password = unquote(parts.password or "")
            register_secret(password)
            register_secret(unquote(parts.username) + ":" + password)
            self.basic_auth = f"{unquote(parts.username)}:{password}"

    def stats(self) -> dict:
        return {
            "url": self.display,
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
        `wait` seconds for one to come back (its cooldown ending) before giving up with NoReplica."""
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
                        raise NoReplica("no replica available: every replica is out of rotation after failures")
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
                        free,
                        key=lambda rh: (rh[0].in_flight / rh[0].limit, (self.replicas.index(rh[0]) - self._rr) % n),
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
