"""Pass one over the pool: per sample a few fixed-size keys, spilled to Parquet batch by batch.

Each sample becomes one row of numbers (exact key, image count, first image hash, LSH band keys), so
the later passes group and join columns instead of holding texts: memory depends on the batch size,
not on the pool size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import polars as pl

from mmssr_core.dedup.config import DedupConfig
from mmssr_core.dedup.minhash import band_keys, lsh_shape, signatures
from mmssr_core.dedup.text import normalised_text, shingles


@dataclass
class Sketch:
    files: list[str] = field(default_factory=list)  # spilled key batches
    rows: int = 0
    bands: int = 0
    band_rows: int = 0
    hashed_texts: int = 0
    missing_image_hashes: int = 0

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.files)


def band_column(i: int) -> str:
    return f"b{i}"


def _keys(df: pl.DataFrame, offset: int) -> pl.DataFrame:
    n_img = pl.col("images").list.len().fill_null(0)
    has_null = pl.col("image_phashes").list.eval(pl.element().is_null()).list.any()
    return df.select(
        pl.int_range(offset, offset + df.height, dtype=pl.UInt32).alias("row"),
        "source",
        "id",
        pl.col("content_hash").fill_null(pl.col("source") + "/" + pl.col("id")).hash(seed=0).alias("ekey"),
        n_img.cast(pl.UInt16).alias("n_img"),
        pl.col("image_phashes").list.first().alias("ph0"),
        ((n_img == 0) | ((pl.col("image_phashes").list.len() == n_img) & ~has_null.fill_null(True)))
        .fill_null(False)
        .alias("ph_ok"),
    )


def _text_bands(df: pl.DataFrame, config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(band keys, has text) for a batch; rows already known as exact copies are not hashed."""
    b, r = lsh_shape(config.text_threshold)
    todo = df.select(normalised_text(), pl.col("duplicate_of").is_null().alias("_first"))
    texts, first = todo["_text"].to_list(), todo["_first"].to_numpy()
    sh = [shingles(t) if f else [] for t, f in zip(texts, first)]
    ok = np.fromiter((bool(s) for s in sh), bool, len(sh))
    keys = np.zeros((len(sh), b), np.uint64)
    if ok.any():
        keys[ok] = band_keys(signatures([s for s in sh if s]), b, r)
    return keys, ok


def sketch_pool(
    open_batches: Callable[[], Iterable[pl.DataFrame]],
    config: DedupConfig,
    workdir: Path,
    progress: Callable[[int], None] | None = None,
) -> Sketch:
    """Write one key row per sample under `workdir`; near-duplicate keys only when config.near."""
    sk = Sketch()
    if config.near:
        sk.bands, sk.band_rows = lsh_shape(config.text_threshold)
    for i, batch in enumerate(open_batches()):
        keys = _keys(batch, sk.rows)
        if config.near:
            bands, ok = _text_bands(batch, config)
            keys = keys.with_columns(
                pl.Series("text_ok", ok),
                *[pl.Series(band_column(j), bands[:, j]) for j in range(sk.bands)],
            )
            sk.hashed_texts += int(ok.sum())
        sk.missing_image_hashes += int((~keys["ph_ok"]).sum())
        path = workdir / f"keys-{i:06d}.parquet"
        keys.write_parquet(path, compression="lz4")
        sk.files.append(str(path))
        sk.rows += batch.height
        if progress is not None:
            progress(sk.rows)
    return sk
