"""Streaming readers: JSON list, JSONL and Parquet, container detected from the bytes, not the name.

Every reader yields `RawRecord`s in input order: either a parsed dict-like object or a parse failure
(reason + message) for that position, so one bad line never stops the rest of the file. Memory stays
flat in file size: JSONL is read line by line, Parquet batch by batch, and a JSON list above
`json_stream_threshold` bytes element by element with `iter_json_array` (bounded depth and size per
record; a general streaming parser such as ijson would build a 100,000-level record in memory).
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
from .json_stream import MAX_RECORD_BYTES, iter_json_array, parse_failure

CONTAINERS = ("json", "jsonl", "parquet")
POOL_SUFFIXES = (".json", ".jsonl", ".parquet")
JSON_STREAM_THRESHOLD = 64 * 1024 * 1024  # bytes; above this a JSON list is parsed incrementally
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
            raise IngestError(f"{path} holds a single pretty-printed JSON object, not a list of samples or JSON lines")
        return "jsonl"
    raise IngestError(
        f"cannot detect the format of {path}: expected a JSON list, JSON lines or Parquet (starts with {head[:16]!r})"
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
                    yield RawRecord(
                        position,
                        reason="record_too_large",
                        where=where,
                        message=f"{where}: {oversize:,} bytes, over the per-record limit of {self.max_record_bytes:,}",
                    )
                    position += 1
                    continue
                if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                if not line.strip():
                    continue  # blank lines are not records
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield RawRecord(
                        position,
                        reason="bad_encoding",
                        where=where,
                        message=f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})",
                    )
                else:
                    try:
                        yield RawRecord(position, data=json.loads(text), where=where)
                    except (ValueError, RecursionError) as exc:
                        reason, message = parse_failure(exc, where)
                        yield RawRecord(position, reason=reason, where=where, message=message)
                position += 1


class JsonListReader(Reader):
    """A top-level JSON list: loaded at once when small, element by element when large or broken."""

    container = "json"

    def __init__(
        self,
        path: Path,
        json_stream_threshold: int = JSON_STREAM_THRESHOLD,
        chunk_chars: int = 1 << 20,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ):
        super().__init__(path)
        self.threshold = json_stream_threshold
        self.chunk_chars = chunk_chars
        self.max_record_chars = max_record_bytes
        self.strategy = ""  # "load" or "incremental": which path was taken (tests check it)

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
        self.strategy = "incremental"
        with open(self.path, encoding="utf-8", errors="surrogateescape") as fh:
            yield from self._incremental(fh)

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


def open_reader(
    path: Path,
    container: str | None = None,
    json_stream_threshold: int = JSON_STREAM_THRESHOLD,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> Reader:
    container = container or detect_container(path)
    if container == "parquet":
        return ParquetReader(path)
    if container == "json":
        return JsonListReader(path, json_stream_threshold, max_record_bytes=max_record_bytes)
    if container == "jsonl":
        return JsonlReader(path, max_record_bytes)
    raise IngestError(f"unknown container {container!r}; expected one of {CONTAINERS}")
