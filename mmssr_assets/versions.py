"""Code versions and data versions: what Dagster compares to mark an asset stale.

- A **code version** names the code (and, for scoring, the scorer identity) that turns inputs into an
  asset. It is a hash of the source files that decide the result, so editing them marks the asset's
  partitions stale in the UI ("has a new code version"); the scoring step's code version is the scorer's
  identity (backend, model, options, taxonomy, prompt version, input profile).
- A **data version** names a partition's content. Sources are observed (`source_folder`: the folder's
  file names, sizes and modification times), the raw pool is versioned by the content hashes of its
  accepted samples, scores by the scorer identity and that pool version, and so on down the graph. Dagster
  marks a partition stale when one of its inputs got a new data version since it was materialized, so a
  re-ingest that yields the same samples (a touched file) leaves the scores fresh.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import polars as pl

from mmssr_core.schema import RAW_POOL_TABLE


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def source_code_version(*modules: str) -> str:
    """A hash of the Python source of the given modules (a package counts with all its `.py` files)."""
    h = hashlib.sha256()
    for name in modules:
        mod = importlib.import_module(name)
        path = Path(mod.__file__)
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for f in files:
            h.update(f.relative_to(path.parent).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def folder_version(folder: Path) -> str:
    """Changes when a file of the folder is added, removed, resized or rewritten (no content read: cheap
    enough for a sensor tick over folders of many images)."""
    h = hashlib.sha256()
    if folder.is_dir():
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def pool_version(st, source: str) -> str:
    """The content version of a source's raw pool: ids and content hashes (text + image bytes) in order."""
    if not st.exists(RAW_POOL_TABLE, source):
        return _digest("empty")
    pool = pl.read_parquet(st.path(RAW_POOL_TABLE, source), columns=["id", "content_hash"])
    return _digest("pool", _joined(pool, ["id", "content_hash"]))


def scores_version(scorer_identity: str, pool: str, failed_ids: list[str]) -> str:
    """Scores are a function of the scorer and the pool; samples that failed make another version."""
    return _digest("scores", scorer_identity, pool, *sorted(failed_ids))


def frame_version(df: pl.DataFrame, columns: list[str]) -> str:
    """The content version of a frame over `columns`, independent of row order."""
    return _digest("frame", _joined(df, columns, sort=True))


def _joined(df: pl.DataFrame, columns: list[str], sort: bool = False) -> str:
    """Every row of `columns` as one text line (cells cast to text), joined: what the versions hash."""
    lines = df.select(
        pl.concat_str([pl.col(c).cast(pl.Utf8, strict=False) for c in columns], separator="\x1f", ignore_nulls=True)
    ).to_series()
    if sort:
        lines = lines.sort()
    return "\n".join(lines.fill_null("").to_list())


def recipe_version(recipe) -> str:
    return _digest(json.dumps(recipe.to_dict(), sort_keys=True, default=str))


def combined_version(versions: dict[str, str]) -> str:
    """One version over named versions (e.g. every source's scores), independent of order."""
    return _digest(*(f"{k}={v}" for k, v in sorted(versions.items())))
