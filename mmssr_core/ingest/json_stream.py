"""A top-level JSON array parsed element by element from a text stream, in bounded memory.

One broken element ends the list (the parser cannot resync after a syntax error), but an element that is
only too deep or too large is skipped by a bracket scan and the list goes on, so one record never costs
the records after it.
"""

from __future__ import annotations

import json
import re

MAX_RECORD_BYTES = 64 * 1024 * 1024  # one JSON line or list element; a larger one is quarantined unread


def parse_failure(exc: Exception, where: str) -> tuple[str, str]:
    """(reason, message) for a record the JSON parser refused: syntax, depth or number size."""
    if isinstance(exc, RecursionError):
        return "record_too_deep", f"{where}: nested deeper than the JSON parser can follow"
    if isinstance(exc, json.JSONDecodeError):
        return "malformed_record", f"{where}: bad JSON ({exc.msg} at column {exc.colno})"
    return "malformed_record", f"{where}: bad JSON ({str(exc)[:200]})"  # e.g. a 5,000-digit number


_WS = " \t\r\n"
# A parse error this close to the end of the buffer may just mean the element continues past it.
_NEAR_END = 32


_SKIP_OUTSIDE = re.compile(r'[\[\]{}",]')
_SKIP_INSIDE = re.compile(r'["\\]')


def iter_json_array(fh, chunk_chars: int = 1 << 20, progress=None, max_element_chars: int = MAX_RECORD_BYTES):
    """Parse a top-level JSON array element by element from a text stream.

    Yields `(position, item, raw_text, None)` per element, `(position, None, None, (reason, message,
    "skipped"))` for one element that is too deep or too large to parse (skipped by a bracket scan, the
    list goes on), or one final `(position, None, None, (reason, message))` where the array breaks
    (`truncated_input` when the file ends inside it, `malformed_record` for a syntax error); everything
    before the break has been yielded. Uses `json.JSONDecoder.raw_decode` over a sliding buffer, so memory
    is bounded by the largest element (at most `max_element_chars`).
    """
    yield from _ArrayScanner(fh, chunk_chars, progress, max_element_chars).elements()


class _ArrayScanner:
    """The state of one scan: a sliding buffer over the stream and a cursor in it."""

    def __init__(self, fh, chunk_chars: int, progress, max_element_chars: int):
        self.fh, self.chunk_chars, self.progress, self.max_chars = fh, chunk_chars, progress, max_element_chars
        self.decoder = json.JSONDecoder()
        self.buf = ""
        self.i = 0  # cursor in buf
        self.offset = 0  # chars of the file before buf[0]
        self.eof = False
        self.position = 0  # index of the current element

    def elements(self):
        """The generator behind `iter_json_array`."""
        if not self.skip_ws():
            yield self.broken("truncated_input", "the file ends before the JSON list starts")
            return
        if self.buf[self.i] != "[":
            yield self.broken("malformed_record", f"expected '[' but found {self.buf[self.i]!r}")
            return
        self.i += 1
        first = True
        while True:
            if not self.skip_ws():
                yield self.broken("truncated_input", "the file ends inside the JSON list (truncated)")
                return
            if first and self.buf[self.i] == "]":
                self.i += 1
                break
            kind, value, end = self.decode()
            if kind == "broken":
                yield value
                return
            if kind == "skipped":
                if self.i != end and not self.skip_value():
                    yield self.broken("truncated_input", f"the file ends inside element {self.position} (truncated)")
                    return
                yield self.position, None, None, (value[0], f"{value[1]}; skipped", "skipped")
            else:
                raw_text = self.buf[self.i : end]
                self.i = end
                yield self.position, value, raw_text, None
            self.position += 1
            first = False
            step = self.separator(check_trailing_comma=kind == "item")
            if step == "end":
                break
            if step != "next":
                yield step
                return
        if self.skip_ws():
            yield self.broken("malformed_record", "unexpected data after the end of the JSON list")

    def broken(self, reason: str, what: str):
        return (
            self.position,
            None,
            None,
            (reason, f"{what} at character {self.offset + self.i}; the rest of the file was not read"),
        )

    def fill(self) -> bool:
        if self.eof:
            return False
        # Grow geometrically so one element larger than a chunk is re-parsed O(log n) times, not O(n).
        chunk = self.fh.read(max(self.chunk_chars, len(self.buf) - self.i))
        if self.progress is not None:
            self.progress.done += len(chunk)
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.i :] + chunk
        self.offset += self.i
        self.i = 0
        return True

    def skip_ws(self) -> bool:
        """Advance past whitespace; False at end of input."""
        while True:
            while self.i < len(self.buf) and self.buf[self.i] in _WS:
                self.i += 1
            if self.i < len(self.buf):
                return True
            if not self.fill():
                return False

    def decode(self):
        """The element at the cursor: ("item", value, end), ("skipped", (reason, message), end) for one that
        is too deep or too large (the cursor stays at its start unless `end` is past it), or ("broken",
        record, None) where the list cannot go on."""
        skipped = None
        end = -1
        while True:
            try:
                item, end = self.decoder.raw_decode(self.buf, self.i)
            except json.JSONDecodeError as exc:
                need_more = exc.pos >= len(self.buf) - _NEAR_END or exc.msg.startswith("Unterminated string")
                if need_more and len(self.buf) - self.i > self.max_chars:
                    skipped = ("record_too_large", f"over the per-record limit of {self.max_chars:,} characters")
                    break
                if need_more and self.fill():
                    continue
                if need_more and self.eof:
                    return (
                        "broken",
                        self.broken("truncated_input", f"the file ends inside element {self.position} (truncated)"),
                        None,
                    )
                return (
                    "broken",
                    self.broken("malformed_record", f"bad JSON in element {self.position} ({exc.msg})"),
                    None,
                )
            except (ValueError, RecursionError) as exc:  # too deep, or a number too long to convert
                skipped = parse_failure(exc, "the element")[0], str(exc)[:200] or type(exc).__name__
                break
            if end > len(self.buf) - _NEAR_END and not self.eof and self.fill():
                # A number may continue in the next chunk ("12" + ".5"): re-parse with lookahead.
                continue
            break
        if skipped is None and end - self.i > self.max_chars:  # parsed within one chunk, still over the limit
            skipped = ("record_too_large", f"over the per-record limit of {self.max_chars:,} characters")
            self.i = end
        if skipped is not None:
            return "skipped", skipped, end
        return "item", item, end

    def separator(self, check_trailing_comma: bool):
        """After an element: "next" past a comma, "end" past the closing bracket, else the break record."""
        if not self.skip_ws():
            return self.broken("truncated_input", "the file ends inside the JSON list (truncated)")
        c = self.buf[self.i]
        if c == ",":
            self.i += 1
            if check_trailing_comma:
                if not self.skip_ws():
                    return self.broken("truncated_input", "the file ends inside the JSON list (truncated)")
                if self.buf[self.i] == "]":
                    return self.broken("malformed_record", "a trailing comma before ']'")
            return "next"
        if c == "]":
            self.i += 1
            return "end"
        return self.broken("malformed_record", f"expected ',' or ']' after element {self.position - 1}, found {c!r}")

    def skip_value(self) -> bool:
        """Move past the value at the cursor without parsing it (no recursion, no growing buffer); False at
        end of input."""
        depth, in_string = 0, False
        while True:
            while True:
                m = (_SKIP_INSIDE if in_string else _SKIP_OUTSIDE).search(self.buf, self.i)
                if m is None:
                    self.i = len(self.buf)
                    break
                c, self.i = m.group(), m.start()
                if in_string:
                    if c == "\\":
                        if self.i + 1 >= len(self.buf):
                            break  # the escaped character is in the next chunk
                        self.i += 2
                        continue
                    in_string = False
                    self.i += 1
                elif c == '"':
                    in_string = True
                    self.i += 1
                elif c in "[{":
                    depth += 1
                    self.i += 1
                elif c in "]}" and depth > 1:
                    depth -= 1
                    self.i += 1
                elif c in "]}" and depth == 1:
                    self.i += 1
                    return True
                elif depth > 0:  # a "," inside the value
                    self.i += 1
                else:  # "," or the list's "]" after a scalar
                    return True
                if depth == 0 and not in_string and c == '"':
                    return True  # a string element ended
            if not self.fill():
                return False
