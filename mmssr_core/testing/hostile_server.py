"""A misbehaving OpenAI-compatible server on 127.0.0.1: what a client must survive.

Modes (`HostileServer(mode=...)`):
- `echo_auth`: every request gets a 401 whose message repeats the Authorization header and the request
  line, as careless servers do (the client must not store what comes back);
- `drip_body`: a 200 whose body arrives one byte every `interval` seconds (per-read timeouts never fire);
- `drip_headers`: the status line and headers themselves arrive one byte at a time;
- `huge`: a 200 announcing `size` bytes in Content-Length and streaming them;
- `huge_chunked`: a 200 streaming chunks without any length, until the client hangs up;
- `overflow_logprobs`: a well-formed chat completion whose digit logprobs are 1e308.
Every stream stops by itself after `max_seconds`, so a client without limits still ends its test.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time

_MODES = ("echo_auth", "drip_body", "drip_headers", "huge", "huge_chunked", "overflow_logprobs")


class _Handler(socketserver.StreamRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        while True:
            request_line = self.rfile.readline(65536)
            if not request_line:
                return
            headers = {}
            while True:
                line = self.rfile.readline(65536)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            self.server.owner.requests += 1
            if not self._answer(request_line.decode("latin-1").strip(), headers):
                return

    def _send(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            return False
        self.server.owner.bytes_sent += len(data)
        return True

    def _answer(self, request_line: str, headers: dict) -> bool:
        owner = self.server.owner
        mode = owner.mode
        if mode == "echo_auth":
            body = json.dumps(
                {
                    "error": {
                        "message": f"invalid credentials: Authorization: "
                        f"{headers.get('authorization', '')} for {request_line}"
                    }
                }
            )
            return self._send(_response(401, body.encode()))
        if mode == "overflow_logprobs":
            digits = [{"token": str(d), "logprob": 1e308} for d in range(6)]
            body = {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "3"},
                        "logprobs": {"content": [{"token": "3", "logprob": 1e308, "top_logprobs": digits}]},
                        "finish_reason": "length",
                    }
                ],
                "model": owner.model,
            }
            return self._send(_response(200, json.dumps(body).encode()))
        deadline = time.monotonic() + owner.max_seconds
        if mode in ("drip_body", "drip_headers"):
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            data = head + b" " * 100000 if mode == "drip_headers" else head
            if mode == "drip_body" and not self._send(head):
                return False
            step = data if mode == "drip_headers" else b" " * 100000
            for i in range(len(step)):
                if time.monotonic() > deadline or not self._send(step[i : i + 1]):
                    return False
                time.sleep(owner.interval)
            return False
        if mode == "huge":
            if not self._send(
                f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {owner.size}\r\n\r\n".encode()
            ):
                return False
            sent, block = 0, b"0" * 65536
            while sent < owner.size and time.monotonic() < deadline:
                if not self._send(block):
                    return False
                sent += len(block)
            return False
        if mode == "huge_chunked":
            if not self._send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            ):
                return False
            block = b"10000\r\n" + b"0" * 65536 + b"\r\n"
            while time.monotonic() < deadline:
                if not self._send(block):
                    return False
            return False
        raise ValueError(f"unknown mode {mode!r}")


def _response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 401: "Unauthorized"}[status]
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "HostileServer"


class HostileServer:
    """`with HostileServer("drip_body") as srv: ... srv.url ...`"""

    def __init__(
        self,
        mode: str,
        *,
        interval: float = 0.5,
        size: int = 300 * 1024 * 1024,
        max_seconds: float = 20.0,
        model: str = "hostile",
    ):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}")
        self.mode = mode
        self.interval = interval
        self.size = size
        self.max_seconds = max_seconds
        self.model = model
        self.requests = 0
        self.bytes_sent = 0
        self._server: _Server | None = None

    def __enter__(self) -> "HostileServer":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"
