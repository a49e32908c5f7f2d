"""Advisory file locks between processes: one writer per source (or per scored source, per recipe).

Why a lock and not only atomic renames: two ingests of one source that both finish would each commit a
complete pool, and the slower one would silently replace the newer pool. The lock makes the second writer
fail fast with a message naming the holder (or wait, when asked), so the race cannot happen.

`fcntl.flock` locks are released by the kernel when the holder dies (kill -9 included), so a crashed run
never leaves a stale lock. They hold across processes on one machine and, on Linux, over NFS v4 (where
flock is emulated with POSIX byte-range locks); they do not hold on filesystems without lock support.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

POLL_SECONDS = 0.2


class LockBusy(RuntimeError):
    """Another process holds the lock and the caller chose not to wait (longer)."""


class FileLock:
    """An exclusive lock on `path`, held from `acquire` (or `with`) until `release`.

    wait: seconds to wait for a busy lock; 0 fails at once, None waits forever.
    what: words for the message ("source 'coco'").
    """

    def __init__(self, path: str | os.PathLike, *, wait: float | None = 0.0, what: str = ""):
        self.path = Path(path)
        self.wait = wait
        self.what = what or str(self.path)
        self._fd: int | None = None

    def acquire(self) -> "FileLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = None if self.wait is None else time.monotonic() + max(0.0, self.wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    waited = f" after waiting {self.wait:g}s" if self.wait else ""
                    raise LockBusy(
                        f"{self.what} is being written by another process ({holder}){waited}; "
                        f"wait for it to finish, then run again"
                    ) from None
                time.sleep(POLL_SECONDS)
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']}, since {since}"
    except (ValueError, KeyError, TypeError, OSError):
        return "holder unknown"
