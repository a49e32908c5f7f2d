"""Streaming readers: JSON list, JSONL and Parquet, container detected from the bytes, not the name.

Every reader yields `RawRecord`s in input order: either a parsed dict-like object or a parse failure
(reason + message) for that position, so one bad line never stops the rest of the file. Memory stays
flat in file size: JSONL is read line by line, Parquet batch by batch, and a JSON list above
`json_stream_threshold` bytes element by element (ijson when installed, else `iter_json_array`).
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import IngestError

CONTAINERS = ("json", "jsonl", "parquet")
POOL_SUFFIXES = (".json", ".jsonl", ".parquet")
JSON_STREAM_THRESHOLD = 64 * 1024 * 1024  # bytes; above this a JSON list is parsed incrementally
MAX_RECORD_BYTES = 64 * 1024 * 1024  # one JSON line or list element; a larger one is quarantined unread
PARQUET_BATCH_ROWS = 64  # rows carry image bytes: keep batches small

_BAD_BYTES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape


@dataclass
class RawRecord:
    position: int
    data: Any = None  # the parsed record (dict expected), when parsing worked
    reason: str | None = None  # quarantine reason when it did not
    message: str | None = None
    where: str = ""  # "line 12", "element 3", "row 7": for messages


def detect_container(path: Path) -> str:
    """`parquet` (PAR1 magic), `json` (a top-level list) or `jsonl` (one object per line)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head[:4] == b"PAR1":
        return "parquet"
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not text:
        raise IngestError(f"{path} is empty: no records to ingest")
    if text[:1] == b"[":
        return "json"
    if text[:1] == b"{":
        first_line = text.split(b"\n", 1)[0].strip()
        if first_line == b"{":
            raise IngestError(
                f"{path} holds a single pretty-printed JSON object, not a list of samples or JSON lines"
            )
        return "jsonl"
    raise IngestError(
        f"cannot detect the format of {path}: expected a JSON list, JSON lines or Parquet "
        f"(starts with {head[:16]!r})"
    )


class Reader:
    """Iterates RawRecords; `fraction` tells how far through the input it is (for progress)."""

    container = ""

    def __init__(self, path: Path):
        self.path = path
        self.total = max(1, os.path.getsize(path))
        self.done = 0

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total)

    def __iter__(self) -> Iterator[RawRecord]:  # pragma: no cover - abstract
        raise NotImplementedError


def _parse_failure(exc: Exception, where: str) -> tuple[str, str]:
    """(reason, message) for a record the JSON parser refused: syntax, depth or number size."""
    if isinstance(exc, RecursionError):
        return "record_too_deep", f"{where}: nested deeper than the JSON parser can follow"
    if isinstance(exc, json.JSONDecodeError):
        return "malformed_record", f"{where}: bad JSON ({exc.msg} at column {exc.colno})"
    return "malformed_record", f"{where}: bad JSON ({str(exc)[:200]})"  # e.g. a 5,000-digit number


class JsonlReader(Reader):
    container = "jsonl"

    def __init__(self, path: Path, max_record_bytes: int = MAX_RECORD_BYTES):
        super().__init__(path)
        self.max_record_bytes = max_record_bytes

    def _lines(self, fh) -> Iterator[tuple[bytes, int | None]]:
        """(line, None), or (b"", size) for a line over the limit, skipped without holding it."""
        while True:
            line = fh.readline(self.max_record_bytes + 1)
            if not line:
                return
            self.done += len(line)
            if len(line) <= self.max_record_bytes or line.endswith(b"\n"):
                yield line, None
                continue
            size = len(line)
            while line and not line.endswith(b"\n"):
                line = fh.readline(1 << 20)
                size += len(line)
                self.done += len(line)
            yield b"", size

    def __iter__(self) -> Iterator[RawRecord]:
        position = 0
        with open(self.path, "rb") as fh:
            for lineno, (line, oversize) in enumerate(self._lines(fh), 1):
                where = f"line {lineno}"
                if oversize is not None:
                    yield RawRecord(position, reason="record_too_large", where=where,
                                    message=f"{where}: {oversize:,} bytes, over the per-record limit of "
                                            f"{self.max_record_bytes:,}")
                    position += 1
                    continue
                if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                if not line.strip():
                    continue  # blank lines are not records
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield RawRecord(position, reason="bad_encoding", where=where,
                                    message=f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})")
                else:
                    try:
                        yield RawRecord(position, data=json.loads(text), where=where)
                    except (ValueError, RecursionError) as exc:
                        reason, message = _parse_failure(exc, where)
                        yield RawRecord(position, reason=reason, where=where, message=message)
                position += 1


class JsonListReader(Reader):
    """A top-level JSON list: loaded at once when small, element by element when large or broken."""

    container = "json"

    def __init__(self, path: Path, json_stream_threshold: int = JSON_STREAM_THRESHOLD, chunk_chars: int = 1 << 20,
                 max_record_bytes: int = MAX_RECORD_BYTES):
        super().__init__(path)
        self.threshold = json_stream_threshold
        self.chunk_chars = chunk_chars
        self.max_record_chars = max_record_bytes
        self.strategy = ""  # "load", "ijson" or "incremental": which path was taken (tests check it)

    def __iter__(self) -> Iterator[RawRecord]:
        if self.total <= self.threshold:
            raw = self.path.read_bytes()
            try:
                items = json.loads(raw.decode("utf-8-sig"))
            except (ValueError, RecursionError):  # ValueError covers bad JSON and bad UTF-8
                items = None  # broken somewhere: the incremental parser finds where, keeps the rest
            if isinstance(items, list):
                self.strategy = "load"
                for i, item in enumerate(items):
                    self.done = int(self.total * (i + 1) / max(1, len(items)))
                    yield RawRecord(i, data=item, where=f"element {i}")
                return
            self.strategy = "incremental"
            text = raw.decode("utf-8", "surrogateescape").lstrip("\ufeff")
            yield from self._incremental(io.StringIO(text))
            return
        try:
            import ijson  # noqa: F401
        except ImportError:
            ijson = None
        if ijson is not None:
            self.strategy = "ijson"
            yield from self._ijson()
            return
        self.strategy = "incremental"
        with open(self.path, encoding="utf-8", errors="surrogateescape") as fh:
            yield from self._incremental(fh)

    def _ijson(self) -> Iterator[RawRecord]:  # pragma: no cover - ijson is not installed in CI
        # ijson cannot resume after a syntax error either: its failure becomes one quarantine row.
        import ijson

        position = 0
        with open(self.path, "rb") as fh:
            try:
                for item in ijson.items(fh, "item", use_float=True):
                    self.done = fh.tell()
                    yield RawRecord(position, data=item, where=f"element {position}")
                    position += 1
            except Exception as exc:  # ijson.JSONError, IncompleteJSONError, UnicodeDecodeError
                reason = "truncated_input" if "incomplete" in type(exc).__name__.lower() else "malformed_record"
                yield RawRecord(position, reason=reason, where=f"element {position}",
                                message=f"element {position} onwards: the JSON list breaks ({exc}); "
                                        f"the rest of the file was not read")

    def _incremental(self, fh) -> Iterator[RawRecord]:
        for pos, item, raw_text, err in iter_json_array(fh, self.chunk_chars, self, self.max_record_chars):
            where = f"element {pos}"
            if err is not None:
                if len(err) > 2:  # one element skipped, the list goes on
                    yield RawRecord(pos, reason=err[0], message=f"{where}: {err[1]}", where=where)
                    continue
                yield RawRecord(pos, reason=err[0], message=f"{where} onwards: {err[1]}", where=where)
                return
            if raw_text is not None and _BAD_BYTES.search(raw_text):
                yield RawRecord(pos, reason="bad_encoding", where=where, message=f"{where}: not valid UTF-8")
                continue
            yield RawRecord(pos, data=item, where=where)


_WS = " \t\r\n"
# A parse error this close to the end of the buffer may just mean the element continues past it.
_NEAR_END = 32


_SKIP_OUTSIDE = re.compile(r'[\[\]{}",]')
_SKIP_INSIDE = re.compile(r'["\\]')


def iter_json_array(fh, chunk_chars: int = 1 << 20, progress: Reader | None = None,
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
                skipped = _parse_failure(exc, "the element")[0], str(exc)[:200] or type(exc).__name__
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


class ParquetReader(Reader):
    """Parquet rows as dicts (image struct {bytes, path} or binary columns stay bytes), batch by batch."""

    container = "parquet"

    def __iter__(self) -> Iterator[RawRecord]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as exc:
            raise IngestError(f"cannot read {self.path} as Parquet: {exc}") from None
        self.total = max(1, pf.metadata.num_rows)
        position = 0
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                self.done = position + 1
                yield RawRecord(position, data=row, where=f"row {position}")
                position += 1


def open_reader(path: Path, container: str | None = None, json_stream_threshold: int = JSON_STREAM_THRESHOLD,
                max_record_bytes: int = MAX_RECORD_BYTES) -> Reader:
    container = container or detect_container(path)
    if container == "parquet":
        return ParquetReader(path)
    if container == "json":
        return JsonListReader(path, json_stream_threshold, max_record_bytes=max_record_bytes)
    if container == "jsonl":
        return JsonlReader(path, max_record_bytes)
    raise IngestError(f"unknown container {container!r}; expected one of {CONTAINERS}")
