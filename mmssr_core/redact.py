"""Keep secrets out of every message the project stores, logs or shows.

Servers echo what they were sent: a 401 body may repeat the `Authorization` header, an error may print the
base URL with its `user:password@`. Every failure message passes through `redact` before it reaches a
cache, a table, a log line or Dagster metadata. Known secrets (the API keys a client was configured with)
are removed wherever they appear; token-like values after `Bearer`/`Basic`, in `api_key=`-style fields
and credentials inside URLs are removed whatever they are.
"""

from __future__ import annotations

import re
import threading

MASK = "[REDACTED]"
_MIN_SECRET = 4

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic|token|apikey)(\s+|%20)[A-Za-z0-9._~+/=:-]{4,}")
_NAMED_SECRET = re.compile(
    r"(?i)(\"?\b(?:authorization|proxy-authorization|x-api-key|api[-_]?key|access[-_]?token|auth[-_]?token|"
    r"secret|password|passwd)\"?\s*[:=]\s*\"?)(?!\[REDACTED\])([^\s\"',;&}]+)"
)
_KEY_SHAPES = re.compile(
    r"\b(sk-[A-Za-z0-9_-]{12,}|hf_[A-Za-z0-9]{12,}|gh[pousr]_[A-Za-z0-9]{12,}|xox[abpr]-[A-Za-z0-9-]{10,})"
)

_known: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret this process uses (an API key) so `redact` removes it wherever it appears."""
    if value and len(value) >= _MIN_SECRET:
        with _lock:
            _known.add(value)


def redact(text: object, secrets: tuple[str, ...] = ()) -> str:
    """`text` with every known or token-like secret replaced by [REDACTED]."""
    if text is None:
        return ""
    out = str(text)
    with _lock:
        known = sorted(_known | {s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True)
    for secret in known:
        out = out.replace(secret, MASK)
    out = _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", out)
    out = _SCHEME_TOKEN.sub(lambda m: m.group(1) + m.group(2) + MASK, out)
    out = _NAMED_SECRET.sub(lambda m: m.group(1) + MASK, out)
    return _KEY_SHAPES.sub(MASK, out)


def redact_url(url: str) -> str:
    """A URL fit to show: credentials removed."""
    return _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", url)
