"""Build raw_pool partitions for scoring tests straight from RAW_POOL_SCHEMA and real shared images.

Kept independent of `mmssr_core.ingest` so the scoring tests exercise only scoring.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from mmssr_core.schema import RAW_POOL_SCHEMA

POOLS = {
    "llava_bench": "llava_bench/pool.llava.json",
    "mathv": "math_vision_testmini/pool.llava.json",
    "tabmwp": "tabmwp_dev1k/pool.llava.json",
}


def pool_frame(source: str, records: list[dict], image_root: Path) -> pl.DataFrame:
    rows = []
    seen: dict[str, str] = {}
    for pos, rec in enumerate(records):
        images = rec.get("images") or ([rec["image"]] if rec.get("image") else [])
        files = [str((image_root / p).resolve()) for p in images]
        h = hashlib.sha256(json.dumps(rec["conversations"], sort_keys=True).encode())
        for f in files:
            h.update(Path(f).read_bytes())
        digest = h.hexdigest()
        rows.append(
            {
                "id": rec.get("id") or digest[:16],
                "source": source,
                "position": pos,
                "images": images,
                "image_files": files,
                "image_formats": ["JPEG" if f.endswith("jpg") else "PNG" for f in files],
                "image_widths": [1 for _ in files],
                "image_heights": [1 for _ in files],
                "image_root": str(image_root),
                "conversations": [{"from": t["from"], "value": t["value"]} for t in rec["conversations"]],
                "system": None,
                "text_only": not files,
                "content_hash": digest,
                "duplicate_of": seen.get(digest),
                "input_format": "llava",
                "metadata": "{}",
            }
        )
        seen.setdefault(digest, rec.get("id"))
    return pl.DataFrame(rows, schema=RAW_POOL_SCHEMA)


def shared_records(shared_data: Path, pool: str, n: int | None = None, offset: int = 0) -> tuple[list[dict], Path]:
    path = shared_data / POOLS[pool]
    records = json.loads(path.read_text())
    return records[offset : offset + n if n is not None else None], path.parent


def write_pool(
    store,
    source: str,
    shared_data: Path,
    pool: str,
    n: int | None = None,
    offset: int = 0,
    extra: list[dict] | None = None,
) -> pl.DataFrame:
    records, root = shared_records(shared_data, pool, n, offset)
    df = pool_frame(source, records + list(extra or []), root)
    store.write("raw_pool", source, df)
    return df
