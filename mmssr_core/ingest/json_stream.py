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


def iter_json_array(fh, chunk_chars: int = 1 << 20, progress=None,
                    max_element_chars: int = MAX_RECORD_BYTES):
    """Parse a top-level JSON array element by element from a text stream.

    Yields `(position, item, raw_text, None)` per element, `(position, None, None, (reason, message,
    "skipped"))` for one element that is too deep or too large to parse (skipped by a bracket scan, the
    list goes on), or one final `(position, None, None, (reason, message))` where the array breaks
    (`truncated_input` when the file ends inside it, `malformed_record` for a syntax error); everything
    before the break has been yielded. Uses `json.JSONDecoder.raw_decode` over a sliding buffer, so memory
    is bounded by the largest element (at most `max_element_chars`).
    """
    decoder = json.JSONDecoder()
    buf = ""
    i = 0  # cursor in buf
    offset = 0  # chars of the file before buf[0]
    eof = False

    def fill() -> bool:
        nonlocal buf, i, offset, eof
        if eof:
            return False
        # Grow geometrically so one element larger than a chunk is re-parsed O(log n) times, not O(n).
        chunk = fh.read(max(chunk_chars, len(buf) - i))
        if progress is not None:
            progress.done += len(chunk)
        if not chunk:
            eof = True
            return False
        buf = buf[i:] + chunk
        offset += i
        i = 0
        return True

    def skip_ws() -> bool:
        """Advance past whitespace; False at end of input."""
        nonlocal i
        while True:
            while i < len(buf) and buf[i] in _WS:
                i += 1
            if i < len(buf):
                return True
            if not fill():
                return False

    def skip_value() -> bool:
        """Move past the value at i without parsing it (no recursion, no growing buffer); False at EOF."""
        nonlocal i
        depth, in_string = 0, False
        while True:
            while True:
                m = (_SKIP_INSIDE if in_string else _SKIP_OUTSIDE).search(buf, i)
                if m is None:
                    i = len(buf)
                    break
                c, i = m.group(), m.start()
                if in_string:
                    if c == "\\":
                        if i + 1 >= len(buf):
                            break  # the escaped character is in the next chunk
                        i += 2
                        continue
                    in_string = False
                    i += 1
                elif c == '"':
                    in_string = True
                    i += 1
                elif c in "[{":
                    depth += 1
                    i += 1
                elif c in "]}" and depth > 1:
                    depth -= 1
                    i += 1
                elif c in "]}" and depth == 1:
                    i += 1
                    return True
                elif depth > 0:  # a "," inside the value
                    i += 1
                else:  # "," or the list's "]" after a scalar
                    return True
                if depth == 0 and not in_string and c == '"':
                    return True  # a string element ended
            if not fill():
                return False

    position = 0

    def broken(reason: str, what: str):
        return (position, None, None, (reason, f"{what} at character {offset + i}; the rest of the file was not read"))

    if not skip_ws():
        yield broken("truncated_input", "the file ends before the JSON list starts")
        return
    if buf[i] != "[":
        yield broken("malformed_record", f"expected '[' but found {buf[i]!r}")
        return
    i += 1
    first = True
    while True:
        if not skip_ws():
            yield broken("truncated_input", "the file ends inside the JSON list (truncated)")
            return
        if first and buf[i] == "]":
            i += 1
            break
        skipped = None
        end = -1
        while True:
            try:
                item, end = decoder.raw_decode(buf, i)
            except json.JSONDecodeError as exc:
                need_more = exc.pos >= len(buf) - _NEAR_END or exc.msg.startswith("Unterminated string")
                if need_more and len(buf) - i > max_element_chars:
                    skipped = ("record_too_large", f"over the per-record limit of {max_element_chars:,} characters")
                    break
                if need_more and fill():
                    continue
                if need_more and eof:
                    yield broken("truncated_input", f"the file ends inside element {position} (truncated)")
                else:
                    yield broken("malformed_record", f"bad JSON in element {position} ({exc.msg})")
                return
            except (ValueError, RecursionError) as exc:  # too deep, or a number too long to convert
                skipped = parse_failure(exc, "the element")[0], str(exc)[:200] or type(exc).__name__
                break
            if end > len(buf) - _NEAR_END and not eof and fill():
                # A number may continue in the next chunk ("12" + ".5"): re-parse with lookahead.
                continue
            break
        if skipped is None and end - i > max_element_chars:  # parsed within one chunk, still over the limit
            skipped = ("record_too_large", f"over the per-record limit of {max_element_chars:,} characters")
            i = end
        if skipped is not None:
            if i != end and not skip_value():
                yield broken("truncated_input", f"the file ends inside element {position} (truncated)")
                return
            yield position, None, None, (skipped[0], f"{skipped[1]}; skipped", "skipped")
            position += 1
            first = False
            if not skip_ws():
                yield broken("truncated_input", "the file ends inside the JSON list (truncated)")
                return
            if buf[i] == ",":
                i += 1
                continue
            if buf[i] == "]":
                i += 1
                break
            yield broken("malformed_record", f"expected ',' or ']' after element {position - 1}, found {buf[i]!r}")
            return
        raw_text = buf[i:end]
        i = end
        yield position, item, raw_text, None
        position += 1
        first = False
        if not skip_ws():
            yield broken("truncated_input", "the file ends inside the JSON list (truncated)")
            return
        if buf[i] == ",":
            i += 1
            if not skip_ws():
                yield broken("truncated_input", "the file ends inside the JSON list (truncated)")
                return
            if buf[i] == "]":
                yield broken("malformed_record", "a trailing comma before ']'")
                return
            continue
        if buf[i] == "]":
            i += 1
            break
        yield broken("malformed_record", f"expected ',' or ']' after element {position - 1}, found {buf[i]!r}")
        return
    if skip_ws():
        yield broken("malformed_record", "unexpected data after the end of the JSON list")
