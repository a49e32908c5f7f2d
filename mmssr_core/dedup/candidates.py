"""Which samples to compare: exact groups by content hash, near candidates by LSH buckets.

Near candidates share a text band key (likely similar text) AND, for samples with images, one
pigeonhole chunk of the first image's perceptual hash (necessary for being within the distance) and
the same number of images. Each band is grouped on its own, and identical candidate lists found by
several bands or chunks are kept once, so the work follows the number of similar samples, not the
number of pairs.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mmssr_core.dedup.config import DedupConfig
from mmssr_core.dedup.image_hash import chunk_keys
from mmssr_core.dedup.sketch import Sketch, band_column

_NO_IMAGE = np.uint64(2**64 - 1)


def exact_groups(sk: Sketch) -> pl.DataFrame:
    """row, rep (first row with the same content hash), copies (rows sharing it), for every sample."""
    keys = sk.scan().select("row", "ekey").collect()
    first = keys.group_by("ekey").agg(pl.col("row").min().alias("rep"), pl.len().cast(pl.UInt32).alias("copies"))
    return keys.join(first, on="ekey").select("row", "rep", "copies").sort("row")


def _with_chunks(members: pl.DataFrame, max_distance: int) -> pl.DataFrame:
    """members (row, key, n_img, ph0) -> one row per (member, image-hash chunk)."""
    ph = members["ph0"].fill_null(0).to_numpy().astype(np.uint64)
    chunks = chunk_keys(ph, max_distance)
    chunks[members["n_img"].to_numpy() == 0] = _NO_IMAGE  # text-only: one shared chunk value
    k = chunks.shape[1]
    return pl.DataFrame(
        {
            "row": np.repeat(members["row"].to_numpy(), k),
            "key": np.repeat(members["key"].to_numpy(), k),
            "n_img": np.repeat(members["n_img"].to_numpy(), k),
            "chunk": chunks.reshape(-1),
        }
    )


def near_buckets(sk: Sketch, exact: pl.DataFrame, config: DedupConfig) -> pl.DataFrame:
    """Distinct candidate lists (column `rows`, sorted row numbers, 2 or more) over all bands."""
    reps = exact.filter(pl.col("row") == pl.col("rep")).select("row")
    base = sk.scan().filter(pl.col("text_ok") & pl.col("ph_ok")).join(reps.lazy(), on="row", how="semi")
    found: list[pl.DataFrame] = []
    for i in range(sk.bands):
        members = (
            base.select("row", pl.col(band_column(i)).alias("key"), "n_img", "ph0")
            .filter(pl.col("key").is_duplicated())
            .collect()
        )
        if members.height == 0:
            continue
        sub = (
            _with_chunks(members, config.image_distance)
            .group_by("key", "n_img", "chunk")
            .agg(pl.col("row").sort().alias("rows"))
            .filter(pl.col("rows").list.len() > 1)
            .select("rows")
        )
        found.append(sub.unique(maintain_order=True))
    if not found:
        return pl.DataFrame(schema={"rows": pl.List(pl.UInt32)})
    return pl.concat(found).unique(maintain_order=True)
