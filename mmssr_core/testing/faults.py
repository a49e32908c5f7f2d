"""Kill a process just before its N-th file operation, as `kill -9` would, to test crash safety.

    python -m mmssr_core.testing.faults N ingest POOL --store STORE --source S

runs the `mmssr` command with every file operation counted (opening a file for writing, os.open with
O_CREAT, fsync, rename/replace, link, symlink, unlink, mkdir, rmdir, truncate) and ends the process with
`os._exit(137)` right before operation N: no `finally`, no `atexit`, no flush, like SIGKILL. A test runs
N = 1, 2, ... until the command completes, so every gap between two file operations is a kill point.
The number of operations counted is written to $MMSSR_FAULT_COUNT_FILE at exit when set.
"""

from __future__ import annotations

import builtins
import io
import os
import sys

KILL_CODE = 137
_count = 0
_kill_at = 0


def _tick() -> None:
    global _count
    _count += 1
    if _count == _kill_at:
        os._exit(KILL_CODE)


def _counted(fn):
    def wrapper(*args, **kwargs):
        _tick()
        return fn(*args, **kwargs)

    wrapper.__wrapped__ = fn
    return wrapper


def _writes(mode: str) -> bool:
    return any(c in mode for c in "wax+")


def install(kill_at: int) -> None:
    """Count file operations from now on; die before operation `kill_at` (0: never)."""
    global _kill_at
    _kill_at = int(kill_at)
    for name in (
        "replace",
        "rename",
        "unlink",
        "remove",
        "rmdir",
        "mkdir",
        "symlink",
        "link",
        "fsync",
        "ftruncate",
        "truncate",
    ):
        setattr(os, name, _counted(getattr(os, name)))
    real_os_open = os.open

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            _tick()
        return real_os_open(path, flags, *args, **kwargs)

    os.open = os_open
    real_open = io.open

    def open_(file, mode="r", *args, **kwargs):
        if _writes(mode):
            _tick()
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = open_


def count() -> int:
    return _count


def main(argv: list[str]) -> int:
    install(int(argv[0]))
    from mmssr_core.cli import main as mmssr

    try:
        return mmssr(argv[1:])
    finally:
        out = os.environ.get("MMSSR_FAULT_COUNT_FILE")
        if out:
            with io.open(out, "w") as fh:  # counted too: it is the last operation anyway
                fh.write(str(_count))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
