"""Duplicate groups of a pool: exact copies and near copies, joined into connected groups.

    result = find_duplicates(lambda: pool_batches(store), DedupConfig())
    result.groups   # source, id, group, group_size, kind: one row per member of a group of 2 or more

Two passes over the pool (keys, then the few candidates' texts), group-bys over fixed-size keys and a
sparse connected-components step: time grows with the pool and memory with a batch plus the keys.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import polars as pl

from mmssr_core.dedup.candidates import exact_groups, near_buckets
from mmssr_core.dedup.config import DedupConfig
from mmssr_core.dedup.sketch import Sketch, sketch_pool
from mmssr_core.dedup.verify import load_candidates, near_edges
from mmssr_core.schema import DUPLICATES_SCHEMA


@dataclass
class DedupResult:
    groups: pl.DataFrame  # DUPLICATES_SCHEMA
    stats: dict = field(default_factory=dict)


def _components(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n rows (scipy's sparse graph routine)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if edges.size == 0:
        return np.arange(n)
    ones = np.ones(edges.shape[0], np.int8)
    graph = coo_matrix((ones, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1]


def _member_frame(sk: Sketch, labels: np.ndarray, copies: np.ndarray) -> pl.DataFrame:
    rows = pl.DataFrame({"row": np.arange(labels.size, dtype=np.uint32), "label": labels, "copies": copies})
    rows = rows.filter(pl.len().over("label") > 1)
    if rows.height == 0:
        return pl.DataFrame(schema=DUPLICATES_SCHEMA)
    index = sk.scan().select("row", "source", "id").join(rows.lazy(), on="row", how="semi").collect()
    rows = rows.join(index, on="row").sort("row")
    return rows.select(
        "source",
        "id",
        (pl.col("source").first() + "/" + pl.col("id").first()).over("label").alias("group"),
        pl.len().over("label").cast(pl.Int64).alias("group_size"),
        pl.when(pl.col("copies") > 1).then(pl.lit("exact")).otherwise(pl.lit("near")).alias("kind"),
    )


def _stats(groups: pl.DataFrame, sk: Sketch, extra: dict) -> dict:
    n_groups = groups["group"].n_unique() if groups.height else 0
    exact_only = (
        groups.group_by("group").agg((pl.col("kind") == "exact").all().alias("e"))["e"].sum() if groups.height else 0
    )
    return {
        "samples": sk.rows,
        "groups": int(n_groups),
        "exact_groups": int(exact_only),
        "near_groups": int(n_groups - exact_only),
        "samples_in_groups": groups.height,
        "removable": groups.height - int(n_groups),
        "lsh_bands": sk.bands,
        "lsh_rows_per_band": sk.band_rows,
        "texts_hashed": sk.hashed_texts,
        "without_image_hash": sk.missing_image_hashes,
        **extra,
    }


def find_duplicates(
    open_batches: Callable[[], Iterable[pl.DataFrame]],
    config: DedupConfig,
    *,
    workdir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> DedupResult:
    """Duplicate groups of the pool `open_batches()` yields (called twice: keys, then candidates)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmssr-dedup-", dir=workdir) as tmp:
        sk = sketch_pool(open_batches, config, Path(tmp), progress)
        t_sketch = time.perf_counter()
        if sk.rows == 0:
            empty = pl.DataFrame(schema=DUPLICATES_SCHEMA)
            return DedupResult(empty, _stats(empty, sk, {"config": config.to_dict()}))
        exact = exact_groups(sk)
        copies = exact["copies"].to_numpy()
        edges = exact.filter(pl.col("row") != pl.col("rep")).select("row", "rep").to_numpy().astype(np.int64)
        candidates = compared = near_pairs = 0
        if config.near and sk.rows:
            buckets = near_buckets(sk, exact, config)
            cand_rows = buckets["rows"].explode().to_numpy() if buckets.height else np.zeros(0, np.int64)
            candidates = int(np.unique(cand_rows).size)
            data = load_candidates(open_batches, cand_rows)
            near, compared = near_edges(buckets, data, config)
            near_pairs = int(near.shape[0])
            edges = np.concatenate([edges, near]) if near.size else edges
        t_near = time.perf_counter()
        labels = _components(sk.rows, edges)
        groups = _member_frame(sk, labels, copies)
    timing = {
        "seconds": round(time.perf_counter() - t0, 3),
        "seconds_keys": round(t_sketch - t0, 3),
        "seconds_near": round(t_near - t_sketch, 3),
    }
    extra = {
        "near_candidates": candidates,
        "near_comparisons": compared,
        "near_pairs": near_pairs,
        "config": config.to_dict(),
        **timing,
    }
    return DedupResult(groups, _stats(groups, sk, extra))
