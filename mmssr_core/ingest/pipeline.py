"""`ingest_source`: one pool file (or source folder) -> raw_pool, quarantine and ingest_stats partitions.

Records stream from the reader through normalisation, conversation and image checks into two Parquet
writers inside one store transaction (the source's new generation, switched in by one rename at the end),
so memory stays flat in pool size apart from the per-run id and content-hash sets (16 bytes-ish per
sample) and the per-image check cache. Any failure of one record quarantines that record only.
Invariant, checked at the end: read == accepted + quarantined.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmssr_core.schema import (
    IMAGES_DIR,
    INGEST_STATS_TABLE,
    QUARANTINE_SCHEMA,
    QUARANTINE_TABLE,
    RAW_POOL_SCHEMA,
    RAW_POOL_TABLE,
    REASONS,
    SOURCE_UNIT,
)
from mmssr_core.store import Store, StoreBusy, StoreError, check_name, remove_orphan_temps

from .conversations import DEFAULT_MAX_TURN_CHARS, MAX_ID_CHARS, metadata_json, normalise, raw_id_of
from .errors import IngestError, Rejected
from .hashing import canonical_text, content_hash, derived_id, short_key
from .images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_PIXELS, ImageChecker
from .readers import JSON_STREAM_THRESHOLD, MAX_RECORD_BYTES, POOL_SUFFIXES, open_reader
from .writer import BATCH_ROWS, BatchWriter, arrow_schema

log = logging.getLogger(__name__)

FORMATS = ("auto", "llava", "sharegpt", "parquet")
PREFERRED_POOL = "pool.llava.json"
PROGRESS_EVERY = 1000


@dataclass
class IngestResult:
    source: str
    read: int
    accepted: int
    quarantined: int
    reasons: dict[str, int]
    text_only: int
    duplicate_content: int
    paths: dict[str, str]
    input: str = ""
    container: str = ""
    format: str = ""
    image_root: str = ""
    images: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- sources ------------------------------------------------------------------------------------
def pool_candidates(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in POOL_SUFFIXES
    )


def find_pool_file(folder: str | os.PathLike) -> Path:
    """The one pool file of a source folder; `pool.llava.json` wins when there are several."""
    folder = Path(folder)
    candidates = pool_candidates(folder)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise IngestError(f"source folder {folder} holds no pool file (*.json, *.jsonl, *.parquet)")
    preferred = [p for p in candidates if p.name == PREFERRED_POOL]
    if preferred:
        return preferred[0]
    raise IngestError(
        f"source folder {folder} holds several pool files ({', '.join(p.name for p in candidates)}); "
        f"name the one to use, or call it {PREFERRED_POOL}"
    )


def discover_sources(root: str | os.PathLike, strict: bool = False) -> dict[str, Path]:
    """Every immediate subfolder of a sources root that holds a pool file: {source name: folder}.

    Folders whose name is not a valid partition name are skipped with a warning (or raise with strict).
    """
    root = Path(root)
    if not root.is_dir():
        raise IngestError(f"sources root {root} is not a folder")
    found: dict[str, Path] = {}
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        if not pool_candidates(folder):
            continue
        try:
            check_name(folder.name, "source")
        except StoreError as exc:
            if strict:
                raise IngestError(str(exc)) from None
            log.warning("skipping source folder %s: %s", folder, exc)
            continue
        found[folder.name] = folder.resolve()
    return found


# -- the pipeline -------------------------------------------------------------------------------
def _resolve_input(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        return find_pool_file(path)
    if not path.exists():
        raise IngestError(f"{path} does not exist")
    if not path.is_file():
        raise IngestError(f"{path} is not a file or a source folder")
    if not os.access(path, os.R_OK):
        raise IngestError(f"{path} is not readable")
    return path


@dataclass
class _Counts:
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    text_only: int = 0
    duplicates: int = 0
    non_finite_metadata: int = 0
    reasons: Counter = field(default_factory=Counter)
    formats: Counter = field(default_factory=Counter)


class _SourceRun:
    """Checks one source's records and writes accepted rows and quarantine rows (see `ingest_source`)."""

    def __init__(
        self,
        source: str,
        checker: ImageChecker,
        root_str: str,
        record_fmt: str,
        container: str,
        max_turn_chars: int,
        raw_w: BatchWriter,
        q_w: BatchWriter,
    ):
        self.source = source
        self.checker = checker
        self.root_str = root_str
        self.embedded_root = str(checker.embedded_dir)
        self.record_fmt = record_fmt
        self.container = container
        self.max_turn_chars = max_turn_chars
        self.raw_w = raw_w
        self.q_w = q_w
        self.n = _Counts()
        self.seen_ids: dict[int, int] = {}  # short_key(id) -> position of the first sample using it
        self.first_by_hash: dict[int, str] = {}  # content hash prefix -> id of the first accepted sample

    def quarantine(self, position: int, sample_id: str | None, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        self.n.quarantined += 1
        self.n.reasons[reason] += 1
        self.q_w.add(
            {"source": self.source, "position": position, "id": sample_id, "reason": reason, "message": message}
        )

    def add(self, rec) -> None:
        """One record: accepted or quarantined, never an exception (one record never costs the run)."""
        self.n.read += 1
        if rec.reason is not None:
            self.quarantine(rec.position, None, rec.reason, rec.message or rec.where)
            return
        raw_id = None
        try:
            if isinstance(rec.data, dict):
                raw_id = self._claim_id(rec)
            row = self._check(rec, raw_id)
        except Rejected as rej:
            self.quarantine(rec.position, _short(raw_id), rej.reason, rej.message)
            return
        except RecursionError:
            self.quarantine(
                rec.position, _short(raw_id), "record_too_deep", f"{rec.where}: nested deeper than Python can follow"
            )
            return
        except Exception as exc:  # noqa: BLE001 - an unforeseen problem of this record only
            log.warning("%s: unexpected %s while checking the record", rec.where, type(exc).__name__, exc_info=True)
            self.quarantine(
                rec.position, _short(raw_id), "unexpected_error", f"{rec.where}: {type(exc).__name__}: {str(exc)[:300]}"
            )
            return
        self.raw_w.add(row)

    def _claim_id(self, rec) -> str | None:
        raw_id = raw_id_of(rec.data, rec.where)
        if raw_id is None:
            return None
        try:
            raw_id.encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected("bad_encoding", f"{rec.where}: id holds an invalid \\u escape") from None
        key = short_key(raw_id)
        if key in self.seen_ids:
            raise Rejected(
                "duplicate_id",
                f"{rec.where}: id {raw_id!r} was already used by the sample at position {self.seen_ids[key]}",
            )
        self.seen_ids[key] = rec.position
        return raw_id

    def _images(self, sample, label: str) -> tuple[list, list, set]:
        infos, rels, kinds = [], [], set()
        for j, ref in enumerate(sample.images):
            try:
                if ref.data is not None:
                    info = self.checker.check_bytes(ref.data, f"embedded image {j}")
                    rels.append(os.path.basename(info.file))
                    kinds.add("embedded")
                else:
                    ref.path.encode("utf-8")
                    info = self.checker.check_path(ref.path)
                    rels.append(ref.path)
                    kinds.add("file")
            except Rejected as rej:
                raise Rejected(rej.reason, f"{label}: {rej.message}") from None
            except UnicodeEncodeError:
                raise Rejected("bad_encoding", f"{label}: image path {j} is not valid UTF-8") from None
            infos.append(info)
        if len(kinds) > 1:
            raise Rejected("malformed_record", f"{label}: mixes embedded images and image paths")
        return infos, rels, kinds

    def _check(self, rec, raw_id: str | None) -> dict:
        sample = normalise(rec.data, rec.where, self.record_fmt, self.max_turn_chars, raw_id=raw_id)
        label = f"{rec.where} (id {raw_id!r})" if raw_id is not None else rec.where
        try:
            text_bytes = canonical_text(sample.system, sample.conversations)
        except UnicodeEncodeError:
            raise Rejected("bad_encoding", f"{label}: text holds an invalid \\u escape (lone surrogate)") from None
        meta = sample.metadata
        names = [r.name for r in sample.images if r.data is not None and r.name]
        if names:
            meta = {**meta, "embedded_image_names": names}
        meta_json, non_finite = metadata_json(meta, label)
        infos, rels, kinds = self._images(sample, label)

        chash = content_hash(text_bytes, [i.sha256 for i in infos])
        sample_id = raw_id if raw_id is not None else self._derived_id(chash, rec.position)
        hkey = int(chash[:16], 16)
        duplicate_of = self.first_by_hash.get(hkey)
        if duplicate_of is None:
            self.first_by_hash[hkey] = sample_id
        else:
            self.n.duplicates += 1
        flavour = "parquet" if self.container == "parquet" else sample.flavour
        self.n.formats[flavour] += 1
        self.n.non_finite_metadata += non_finite
        is_text_only = not infos
        self.n.text_only += is_text_only
        self.n.accepted += 1
        return {
            "id": sample_id,
            "source": self.source,
            "position": rec.position,
            "images": rels,
            "image_files": [i.file for i in infos],
            "image_formats": [i.format for i in infos],
            "image_widths": [i.width for i in infos],
            "image_heights": [i.height for i in infos],
            "image_phashes": [i.phash for i in infos],
            "image_root": self.embedded_root if "embedded" in kinds else self.root_str,
            "conversations": sample.conversations,
            "system": sample.system,
            "text_only": is_text_only,
            "content_hash": chash,
            "duplicate_of": duplicate_of,
            "input_format": flavour,
            "metadata": meta_json,
        }

    def _derived_id(self, chash: str, position: int) -> str:
        sample_id = derived_id(chash)
        key = short_key(sample_id)
        if key in self.seen_ids:  # identical content without ids: keep ids unique and stable
            sample_id = f"{sample_id}.{position}"
            key = short_key(sample_id)
        self.seen_ids[key] = position
        return sample_id


def _short(raw_id: str | None) -> str | None:
    """Ids are bounded at ingest, but a rejected one may be huge: keep the quarantine row small."""
    return raw_id if raw_id is None or len(raw_id) <= MAX_ID_CHARS else raw_id[:MAX_ID_CHARS] + "..."


def _check_options(source: str, fmt: str, max_pixels: int, max_turn_chars: int) -> None:
    try:
        check_name(source, "source")
    except StoreError as exc:
        raise IngestError(str(exc)) from None
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if max_pixels < 1 or max_turn_chars < 1:
        raise IngestError("max_pixels and max_turn_chars must be positive")


def ingest_source(
    path: str | os.PathLike,
    source: str,
    store: Store,
    image_root: str | os.PathLike | None = None,
    fmt: str = "auto",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_turn_chars: int = DEFAULT_MAX_TURN_CHARS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    progress: Callable[[dict], None] | None = None,
    json_stream_threshold: int = JSON_STREAM_THRESHOLD,
    max_record_bytes: int = MAX_RECORD_BYTES,
    batch_rows: int = BATCH_ROWS,
    lock_wait: float | None = 0.0,
) -> IngestResult:
    """Ingest one source into `store`, replacing its raw_pool/quarantine/ingest_stats partitions at once.

    `path` is a pool file or a source folder holding one. Raises `IngestError` when the input as a whole
    is unusable, or when another process is ingesting the same source (after `lock_wait` seconds; None
    waits). Bad samples never raise, they are quarantined with a reason code. The three partitions are
    committed together: readers see the previous ingest's set until this one is complete.
    """
    started = time.perf_counter()
    _check_options(source, fmt, max_pixels, max_turn_chars)
    pool_file = _resolve_input(path).absolute()
    root = Path(image_root).absolute() if image_root is not None else pool_file.parent
    if not root.is_dir():
        raise IngestError(f"image root {root} is not a folder")
    reader = open_reader(pool_file, "parquet" if fmt == "parquet" else None, json_stream_threshold, max_record_bytes)
    try:
        tx = store.transaction(SOURCE_UNIT, source, wait=lock_wait)
        tx.__enter__()
    except StoreBusy as exc:
        raise IngestError(f"cannot ingest now: {exc}") from None
    try:
        embedded_dir = store.root / IMAGES_DIR / source
        remove_orphan_temps(embedded_dir, everything=True)  # the source lock covers its image writers
        checker = ImageChecker(root, max_pixels, embedded_dir=embedded_dir, max_bytes=max_image_bytes)
        raw_w = BatchWriter(tx.path(RAW_POOL_TABLE), arrow_schema(RAW_POOL_SCHEMA), batch_rows)
        q_w = BatchWriter(tx.path(QUARANTINE_TABLE), arrow_schema(QUARANTINE_SCHEMA), batch_rows)
        record_fmt = fmt if fmt in ("llava", "sharegpt") else "auto"
        run = _SourceRun(source, checker, str(root), record_fmt, reader.container, max_turn_chars, raw_w, q_w)
        _read_all(reader, run, progress)
        result = _result(run, store, pool_file, reader, root, started)
        limits = {
            "max_pixels": max_pixels,
            "max_turn_chars": max_turn_chars,
            "max_image_bytes": max_image_bytes,
            "max_record_bytes": max_record_bytes,
        }
        tx.write_json(INGEST_STATS_TABLE, {**result.to_dict(), **limits, **_extra_stats(run, reader)})
    except BaseException:
        tx.__exit__(*sys.exc_info())
        raise
    tx.__exit__(None, None, None)
    if progress is not None:
        n = run.n
        progress({"read": n.read, "accepted": n.accepted, "quarantined": n.quarantined, "fraction": 1.0, "done": True})
    return result


def _read_all(reader, run: _SourceRun, progress: Callable[[dict], None] | None) -> None:
    """Every record through `run`, then both files finished (or both abandoned on any error)."""
    try:
        for rec in reader:
            if progress is not None and (run.n.read + 1) % PROGRESS_EVERY == 0:
                progress(
                    {
                        "read": run.n.read + 1,
                        "accepted": run.n.accepted,
                        "quarantined": run.n.quarantined,
                        "fraction": reader.fraction,
                    }
                )
            run.add(rec)
        n = run.n
        if n.read != n.accepted + n.quarantined:  # pragma: no cover - a bug, never bad input
            raise RuntimeError(f"ingest invariant broken: read {n.read} != {n.accepted} + {n.quarantined}")
        run.raw_w.close()
        run.q_w.close()
    except BaseException:
        run.raw_w.abort()
        run.q_w.abort()
        raise


def _extra_stats(run: _SourceRun, reader) -> dict:
    return {
        "formats": dict(sorted(run.n.formats.items())),
        "metadata_non_finite_numbers": run.n.non_finite_metadata,
        "json_strategy": getattr(reader, "strategy", None),
    }


def _result(run: _SourceRun, store: Store, pool_file: Path, reader, root: Path, started: float) -> IngestResult:
    n = run.n
    fmt_name = n.formats.most_common(1)[0][0] if n.formats else reader.container
    checker = run.checker
    return IngestResult(
        source=run.source,
        read=n.read,
        accepted=n.accepted,
        quarantined=n.quarantined,
        reasons=dict(sorted(n.reasons.items())),
        text_only=n.text_only,
        duplicate_content=n.duplicates,
        paths={
            RAW_POOL_TABLE: str(store.path(RAW_POOL_TABLE, run.source)),
            QUARANTINE_TABLE: str(store.path(QUARANTINE_TABLE, run.source)),
            INGEST_STATS_TABLE: str(store.path(INGEST_STATS_TABLE, run.source, ".json")),
        },
        input=str(pool_file),
        container=reader.container,
        format=fmt_name,
        image_root=str(root),
        images={**checker.stats(), "unique": len(checker._by_file) + len(checker._by_sha)},
        seconds=round(time.perf_counter() - started, 3),
    )
