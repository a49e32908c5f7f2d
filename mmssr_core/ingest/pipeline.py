"""`ingest_source`: one pool file (or source folder) -> raw_pool, quarantine and ingest_stats partitions.

Records stream from the reader through normalisation, conversation and image checks into two Parquet
writers (temp file + atomic rename), so memory stays flat in pool size apart from the per-run id and
content-hash sets (16 bytes-ish per sample) and the per-image check cache. Invariant, checked at the
end: read == accepted + quarantined.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmssr_core.schema import QUARANTINE_SCHEMA, RAW_POOL_SCHEMA, REASONS
from mmssr_core.store import Store, StoreError, check_name

from .conversations import DEFAULT_MAX_TURN_CHARS, normalise, raw_id_of
from .errors import IngestError, Rejected
from .hashing import canonical_text, content_hash, derived_id, short_key
from .images import DEFAULT_MAX_PIXELS, ImageChecker
from .readers import JSON_STREAM_THRESHOLD, POOL_SUFFIXES, open_reader

log = logging.getLogger(__name__)

FORMATS = ("auto", "llava", "sharegpt", "parquet")
PREFERRED_POOL = "pool.llava.json"
BATCH_ROWS = 2048
PROGRESS_EVERY = 1000

RAW_POOL_TABLE = "raw_pool"
QUARANTINE_TABLE = "quarantine"
STATS_TABLE = "ingest_stats"
IMAGES_DIR = "images"  # <store>/images/<source>/<sha256>.<ext> for embedded images


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
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in POOL_SUFFIXES)


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
    raise IngestError(f"source folder {folder} holds several pool files ({', '.join(p.name for p in candidates)}); "
                      f"name the one to use, or call it {PREFERRED_POOL}")


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


# -- output -------------------------------------------------------------------------------------
def _arrow_schema(schema: dict):
    import polars as pl

    return pl.DataFrame(schema=schema).to_arrow().schema


class _BatchWriter:
    """Rows -> Parquet in batches, into a temp file renamed over the partition on commit."""

    def __init__(self, path: Path, schema, batch_rows: int = BATCH_ROWS):
        import pyarrow.parquet as pq

        self.path = path
        self.schema = schema
        self.batch_rows = batch_rows
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.names = schema.names
        self.columns: dict[str, list] = {n: [] for n in self.names}
        self.pending = 0

    def add(self, row: dict) -> None:
        # Columnar buffers: pa.array per column is ~10x faster than Table.from_pylist on row dicts.
        for name in self.names:
            self.columns[name].append(row[name])
        self.pending += 1
        if self.pending >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            arrays = [pa.array(self.columns[f.name], type=f.type) for f in self.schema]
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
            self.columns = {n: [] for n in self.names}
            self.pending = 0

    def commit(self) -> None:
        self.flush()
        self.writer.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - best effort on an error path
            pass
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


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


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return f"<{len(obj)} bytes>"
    return str(obj)


_META_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=_json_default)
_META_ENCODER_ASCII = json.JSONEncoder(ensure_ascii=True, sort_keys=True, default=_json_default)


def _metadata_json(meta: dict) -> str:
    if not meta:
        return "{}"
    text = _META_ENCODER.encode(meta)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from \ud800-style escapes: keep them escaped
        text = _META_ENCODER_ASCII.encode(meta)
    return text


def ingest_source(
    path: str | os.PathLike,
    source: str,
    store: Store,
    image_root: str | os.PathLike | None = None,
    fmt: str = "auto",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_turn_chars: int = DEFAULT_MAX_TURN_CHARS,
    progress: Callable[[dict], None] | None = None,
    json_stream_threshold: int = JSON_STREAM_THRESHOLD,
    batch_rows: int = BATCH_ROWS,
) -> IngestResult:
    """Ingest one source into `store`, replacing its raw_pool/quarantine/ingest_stats partitions.

    `path` is a pool file or a source folder holding one. Raises `IngestError` when the input as a whole
    is unusable; bad samples never raise, they are quarantined with a reason code.
    """
    started = time.perf_counter()
    try:
        check_name(source, "source")
    except StoreError as exc:
        raise IngestError(str(exc)) from None
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if max_pixels < 1 or max_turn_chars < 1:
        raise IngestError("max_pixels and max_turn_chars must be positive")
    pool_file = _resolve_input(path).absolute()
    root = Path(image_root).absolute() if image_root is not None else pool_file.parent
    if not root.is_dir():
        raise IngestError(f"image root {root} is not a folder")

    reader = open_reader(pool_file, "parquet" if fmt == "parquet" else None, json_stream_threshold)
    record_fmt = fmt if fmt in ("llava", "sharegpt") else "auto"
    container = reader.container
    checker = ImageChecker(root, max_pixels, embedded_dir=store.root / IMAGES_DIR / source)
    root_str = str(root)
    embedded_root = str(checker.embedded_dir)

    raw_path = store.path(RAW_POOL_TABLE, source)
    q_path = store.path(QUARANTINE_TABLE, source)
    raw_w = _BatchWriter(raw_path, _arrow_schema(RAW_POOL_SCHEMA), batch_rows)
    q_w = _BatchWriter(q_path, _arrow_schema(QUARANTINE_SCHEMA), batch_rows)

    read = accepted = quarantined = text_only = duplicates = 0
    reasons: Counter = Counter()
    formats: Counter = Counter()
    seen_ids: dict[int, int] = {}  # short_key(id) -> position of the first sample using it
    first_by_hash: dict[int, str] = {}  # content hash prefix -> id of the first accepted sample

    def quarantine(position: int, sample_id: str | None, reason: str, message: str) -> None:
        nonlocal quarantined
        assert reason in REASONS, reason
        quarantined += 1
        reasons[reason] += 1
        q_w.add({"source": source, "position": position, "id": sample_id, "reason": reason, "message": message})

    try:
        for rec in reader:
            read += 1
            if progress is not None and read % PROGRESS_EVERY == 0:
                progress({"read": read, "accepted": accepted, "quarantined": quarantined,
                          "fraction": reader.fraction})
            if rec.reason is not None:
                quarantine(rec.position, None, rec.reason, rec.message or rec.where)
                continue
            raw_id = None
            try:
                if isinstance(rec.data, dict):
                    raw_id = raw_id_of(rec.data, rec.where)
                    if raw_id is not None:
                        raw_id.encode("utf-8")
                        key = short_key(raw_id)
                        if key in seen_ids:
                            raise Rejected("duplicate_id", f"{rec.where}: id {raw_id!r} was already used by the "
                                                           f"sample at position {seen_ids[key]}")
                        seen_ids[key] = rec.position
                sample = normalise(rec.data, rec.where, record_fmt, max_turn_chars, raw_id=raw_id)
                label = f"{rec.where} (id {raw_id!r})" if raw_id is not None else rec.where
                try:
                    text_bytes = canonical_text(sample.system, sample.conversations)
                except UnicodeEncodeError:
                    raise Rejected("bad_encoding", f"{label}: text holds an invalid \\u escape (lone surrogate)") from None
                infos, rels = [], []
                kinds = set()
                for j, ref in enumerate(sample.images):
                    try:
                        if ref.data is not None:
                            info = checker.check_bytes(ref.data, f"embedded image {j}")
                            rels.append(os.path.basename(info.file))
                            kinds.add("embedded")
                        else:
                            ref.path.encode("utf-8")
                            info = checker.check_path(ref.path)
                            rels.append(ref.path)
                            kinds.add("file")
                    except Rejected as rej:
                        raise Rejected(rej.reason, f"{label}: {rej.message}") from None
                    except UnicodeEncodeError:
                        raise Rejected("bad_encoding", f"{label}: image path {j} is not valid UTF-8") from None
                    infos.append(info)
                if len(kinds) > 1:
                    raise Rejected("malformed_record", f"{label}: mixes embedded images and image paths")
            except Rejected as rej:
                quarantine(rec.position, raw_id, rej.reason, rej.message)
                continue
            except UnicodeEncodeError:
                quarantine(rec.position, None, "bad_encoding", f"{rec.where}: id holds an invalid \\u escape")
                continue

            chash = content_hash(text_bytes, [i.sha256 for i in infos])
            sample_id = raw_id
            if sample_id is None:
                sample_id = derived_id(chash)
                key = short_key(sample_id)
                if key in seen_ids:  # identical content without ids: keep ids unique and stable
                    sample_id = f"{sample_id}.{rec.position}"
                    key = short_key(sample_id)
                seen_ids[key] = rec.position
            hkey = int(chash[:16], 16)
            duplicate_of = first_by_hash.get(hkey)
            if duplicate_of is None:
                first_by_hash[hkey] = sample_id
            else:
                duplicates += 1
            meta = sample.metadata
            names = [r.name for r in sample.images if r.data is not None and r.name]
            if names:
                meta = {**meta, "embedded_image_names": names}
            flavour = "parquet" if container == "parquet" else sample.flavour
            formats[flavour] += 1
            is_text_only = not infos
            text_only += is_text_only
            accepted += 1
            raw_w.add({
                "id": sample_id,
                "source": source,
                "position": rec.position,
                "images": rels,
                "image_files": [i.file for i in infos],
                "image_formats": [i.format for i in infos],
                "image_widths": [i.width for i in infos],
                "image_heights": [i.height for i in infos],
                "image_phashes": [i.phash for i in infos],
                "image_root": embedded_root if "embedded" in kinds else root_str,
                "conversations": sample.conversations,
                "system": sample.system,
                "text_only": is_text_only,
                "content_hash": chash,
                "duplicate_of": duplicate_of,
                "input_format": flavour,
                "metadata": _metadata_json(meta),
            })
        if read != accepted + quarantined:  # pragma: no cover - a bug, never bad input
            raise RuntimeError(f"ingest invariant broken: read {read} != {accepted} + {quarantined}")
        raw_w.commit()
        q_w.commit()
    except BaseException:
        raw_w.abort()
        q_w.abort()
        raise

    seconds = time.perf_counter() - started
    fmt_name = formats.most_common(1)[0][0] if formats else container
    result = IngestResult(
        source=source, read=read, accepted=accepted, quarantined=quarantined,
        reasons=dict(sorted(reasons.items())), text_only=text_only, duplicate_content=duplicates,
        paths={"raw_pool": str(raw_path), "quarantine": str(q_path),
               "ingest_stats": str(store.path(STATS_TABLE, source, ".json"))},
        input=str(pool_file), container=container, format=fmt_name, image_root=root_str,
        images={**checker.stats(), "unique": len(checker._by_file) + len(checker._by_sha)},
        seconds=round(seconds, 3),
    )
    stats = result.to_dict()
    stats.update({
        "formats": dict(sorted(formats.items())),
        "max_pixels": max_pixels,
        "max_turn_chars": max_turn_chars,
        "json_strategy": getattr(reader, "strategy", None),
    })
    store.write_json(STATS_TABLE, source, stats)
    if progress is not None:
        progress({"read": read, "accepted": accepted, "quarantined": quarantined, "fraction": 1.0, "done": True})
    return result
