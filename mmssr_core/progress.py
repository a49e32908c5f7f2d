"""Progress of long commands on stderr: a bar redrawn in place on a terminal, plain lines otherwise.

Why both: a person at a terminal wants one live line (done/total, rate, time left); a log file or CI wants
a few plain lines it can keep, not thousands of carriage returns. Progress never writes to stdout, so the
`--json` summary a command prints there stays the last line and machine-readable.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

BAR_WIDTH = 24
REDRAW_SECONDS = 0.1  # a terminal bar is redrawn at most this often


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """One task's progress: `update(done, total)` as it goes, `message(text)` for lines in between,
    `close()` at the end (or use it as a context manager).

    On a terminal (`stream.isatty()`) a bar is redrawn in place; otherwise a plain line is written at the
    first update, then at most every `every` seconds, and once at the end (`plain_updates=False` keeps
    only the messages, for callers whose messages already tell the steps). Nothing is shown before `delay`
    seconds have passed (short tasks stay silent); `enabled=False` is silent.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "samples",
        stream: TextIO | None = None,
        every: float = 2.0,
        enabled: bool = True,
        tty: bool | None = None,
        plain_updates: bool = True,
        delay: float = 0.0,
    ):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every, self.enabled, self.plain_updates, self.delay = every, enabled, plain_updates, delay
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", lambda: False)())
        self.done, self.fraction, self.note, self.rate_base = 0, None, "", 0
        self._start = time.monotonic()
        self._last: float | None = None
        self._drawn = False  # a bar is on the terminal's current line
        self._final = False
        self._closed = False

    # -- what callers use ------------------------------------------------------------------------
    def update(
        self, done: int, total: int | None = None, *, fraction: float | None = None, note: str = "", skipped: int = 0
    ) -> None:
        """`done` of `total` (`fraction` when the total is not a count, e.g. bytes read); `skipped` of the
        done ones cost nothing (cached) and are left out of the rate."""
        if total is not None:
            self.total = total
        self.done, self.fraction, self.note, self.rate_base = done, fraction, note, skipped
        final = self._is_final()
        if not self.enabled or (final and self._final):
            return
        self._final = final
        now = time.monotonic()
        if self._last is None and now - self._start < self.delay:
            return  # short tasks stay silent
        wait = REDRAW_SECONDS if self.tty else self.every
        if not final and self._last is not None and now - self._last < wait:
            return
        self._last = now
        if self.tty:
            self._draw()
        elif self.plain_updates:
            self._write(self.line())

    def message(self, text: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        if not self.enabled:
            return
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self._drawn = False
        self._write(text)
        if self.tty and self._last is not None and not self._closed:
            self._draw()

    @property
    def finished(self) -> bool:
        return self._final or self._closed

    def close(self) -> None:
        """Leave the last state on screen (a terminal's bar ends with a newline)."""
        self._closed = True
        if self.enabled and self._drawn:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- rendering ---------------------------------------------------------------------------------
    def _is_final(self) -> bool:
        if self.fraction is not None:
            return self.fraction >= 1.0
        return self.total is not None and self.done >= self.total

    def _share(self) -> float | None:
        if self.fraction is not None:
            return max(0.0, min(1.0, self.fraction))
        if self.total:
            return max(0.0, min(1.0, self.done / self.total))
        return 1.0 if self.total == 0 else None

    def _numbers(self) -> tuple[str, str, str]:
        """(count, rate, time left) as text."""
        elapsed = max(1e-9, time.monotonic() - self._start)
        rate = max(0, self.done - self.rate_base) / elapsed
        share = self._share()
        count = f"{self.done:,}/{self.total:,}" if self.total is not None else f"{self.done:,}"
        if share is not None and share >= 1.0:
            left = 0.0
        elif self.fraction is not None and self.fraction > 0:
            left = elapsed * (1 - self.fraction) / self.fraction
        elif self.total is not None and rate > 0:
            left = (self.total - self.done) / rate
        else:
            left = None
        return count, f"{rate:,.1f} {self.unit}/s", _eta(left)

    def line(self) -> str:
        """The plain line: `label: done/total (pct) rate ETA t; note`."""
        count, rate, eta = self._numbers()
        share = self._share()
        pct = f" ({100 * share:.1f}%)" if share is not None else ""
        return f"{self.label}: {count}{pct} {rate} ETA {eta}" + (f"; {self.note}" if self.note else "")

    def _draw(self) -> None:
        count, rate, eta = self._numbers()
        share = self._share()
        if share is None:
            bar = f"{count} {self.unit}"
        else:
            filled = round(BAR_WIDTH * share)
            bar = f"|{'#' * filled}{'.' * (BAR_WIDTH - filled)}| {100 * share:3.0f}% {count}"
        text = f"{self.label} {bar} {rate} ETA {eta}" + (f" {self.note}" if self.note else "")
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r\x1b[2K" + text[:width])
        self.stream.flush()
        self._drawn = True

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
