"""Builders for ingestion tests: small real images, pools in each container, a checked ingest."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import polars as pl


def make_image(path: Path, fmt: str = "PNG", size=(32, 24), color=(200, 30, 30), noise: bool = False) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if noise:
        import numpy as np

        arr = (np.random.default_rng(0).random((size[1], size[0], 3)) * 255).astype("uint8")
        im = Image.fromarray(arr)
    else:
        im = Image.new("RGB", size, color)
    im.save(path, fmt)
    return path


def image_bytes(fmt: str = "PNG", size=(16, 16), color=(10, 200, 10)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds no pixel data (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def sample(sid, image="img/a.png", question="What is shown?", answer="A red square.", **extra) -> dict:
    rec = {
        "conversations": [
            {"from": "human", "value": ("<image>\n" if image else "") + question},
            {"from": "gpt", "value": answer},
        ],
        **extra,
    }
    if sid is not None:
        rec["id"] = sid
    if image is not None:
        rec["image"] = image
    return rec


def write_jsonl(path: Path, records: list) -> Path:
    """Records are dicts (dumped) or raw bytes (written as the line, for malformed input)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for r in records:
            fh.write(r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode())
            fh.write(b"\n")
    return path


def write_json(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1))
    return path


def source_dir(tmp_path: Path) -> Path:
    """A source folder with two good images (PNG and JPEG)."""
    root = tmp_path / "src"
    make_image(root / "img" / "a.png", "PNG")
    make_image(root / "img" / "b.jpg", "JPEG", color=(20, 20, 220))
    return root


def tables(store, source: str) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    return (store.read("raw_pool", source), store.read("quarantine", source), store.read_json("ingest_stats", source))


def check_invariants(result, store) -> tuple[pl.DataFrame, pl.DataFrame]:
    raw, q, stats = tables(store, result.source)
    assert result.read == result.accepted + result.quarantined
    assert raw.height == result.accepted and q.height == result.quarantined
    assert stats["read"] == result.read and stats["accepted"] == raw.height and stats["quarantined"] == q.height
    assert sorted(raw["position"].to_list() + q["position"].to_list()) == list(range(result.read))
    assert dict(q["reason"].value_counts().iter_rows()) == result.reasons
    assert raw["id"].n_unique() == raw.height
    return raw, q


def reason_at(q: pl.DataFrame, position: int) -> str:
    rows = q.filter(pl.col("position") == position)
    assert rows.height == 1, f"expected one quarantine row at position {position}, got {rows}"
    return rows["reason"][0]
