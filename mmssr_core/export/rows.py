"""The ingested rows of a selection, in selection order (by `rank` when present), without repeats.

Ids are matched on (source, id) when the selection has a `source` column, else on id alone (refused when
an id exists in several sources). A selection made without deduplication can list the same content
twice (one conversation in two sources): only its first occurrence is kept, and the count is reported.
"""

from __future__ import annotations

import polars as pl

from mmssr_core.export.errors import ExportError
from mmssr_core.schema import RAW_POOL_TABLE
from mmssr_core.store import Store, StoreError

COLUMNS = [
    "id",
    "source",
    "images",
    "image_files",
    "image_formats",
    "image_root",
    "conversations",
    "system",
    "content_hash",
]


def _selection_keys(selection: pl.DataFrame) -> pl.DataFrame:
    if "id" not in selection.columns:
        raise ExportError("the selection has no 'id' column")
    cols = ["id"] + (["source"] if "source" in selection.columns else [])
    sel = selection.sort("rank", maintain_order=True) if "rank" in selection.columns else selection
    sel = sel.select([pl.col(c).cast(pl.Utf8) for c in cols]).with_row_index("_order")
    dup = sel.filter(pl.struct(cols).is_duplicated()).unique(cols, maintain_order=True)
    if dup.height:
        shown = ", ".join(repr(v) for v in dup["id"].head(10).to_list())
        raise ExportError(f"the selection lists {dup.height} id(s) twice: {shown}")
    return sel


def _refuse_ambiguous(rows: pl.DataFrame) -> None:
    amb = rows.group_by("id").agg(pl.col("source").unique().sort()).filter(pl.col("source").list.len() > 1)
    if amb.height:
        shown = ", ".join(f"{r['id']!r} (sources {r['source']})" for r in amb.head(10).iter_rows(named=True))
        raise ExportError(
            f"{amb.height} selected id(s) exist in several sources; give the selection a 'source' column: {shown}"
        )


def _refuse_missing(joined: pl.DataFrame, on: list[str]) -> None:
    missing = joined.filter(pl.col("conversations").is_null())
    if not missing.height:
        return
    if "source" in on:
        names = [f"{r['id']!r} (source {r['source']!r})" for r in missing.head(10).iter_rows(named=True)]
    else:
        names = [repr(v) for v in missing["id"].head(10).to_list()]
    more = f" and {missing.height - 10} more" if missing.height > 10 else ""
    raise ExportError(f"{missing.height} selected id(s) are not in the store's raw_pool: {', '.join(names)}{more}")


def load_rows(selection: pl.DataFrame, store: Store) -> tuple[pl.DataFrame, int]:
    """(the raw_pool rows of the selection in order, number of content repeats left out)."""
    sel = _selection_keys(selection)
    on = [c for c in ("source", "id") if c in sel.columns]
    try:
        scan = store.scan(RAW_POOL_TABLE)
    except StoreError as exc:
        raise ExportError(f"no ingested pool to export from: {exc}") from None
    rows = scan.select(COLUMNS).filter(pl.col("id").is_in(sel["id"].unique().implode())).collect()
    if on == ["id"]:
        _refuse_ambiguous(rows)
    joined = sel.join(rows, on=on, how="left", maintain_order="left").sort("_order")
    _refuse_missing(joined, on)
    first = joined.filter(pl.col("content_hash").is_first_distinct() | pl.col("content_hash").is_null())
    return first, joined.height - first.height
