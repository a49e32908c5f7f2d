"""Store tables as Dagster metadata: `MetadataValue.table` with a `TableSchema`, paths, scorer notes.

The UI renders a table value as a sortable table with typed columns, so every tabular entry goes through
`table()` (rows given) or `frame_table()` (a Polars frame); Markdown stays for prose and images only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import dagster as dg
import polars as pl

RULES_NOTE = "rules: heuristic stand-in (weight-free demo scorer, not the mmSSR model)"
_TEXT_WIDTH = 120


def _column_type(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Boolean:
        return "bool"
    return "string"


def _cell(value, kind: str):
    if value is None:
        return None
    if kind in ("int", "float", "bool"):
        return value
    text = _flatten(value)
    text = str(text).replace("\n", " ")
    return text if len(text) <= _TEXT_WIDTH else text[: _TEXT_WIDTH - 1] + "…"


def table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence]) -> dg.MetadataValue:
    """A typed table: `columns` are (name, type) with type int | float | bool | string."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns])
    records = [dg.TableRecord({name: _cell(v, kind) for (name, kind), v in zip(columns, row)}) for row in rows]
    return dg.MetadataValue.table(records, schema=schema)


def frame_table(df: pl.DataFrame, n: int | None = 5) -> dg.MetadataValue:
    """The first `n` rows of a frame (all rows when `n` is None), column types from the frame's dtypes."""
    head = df if n is None else df.head(n)
    columns = [(name, _column_type(dtype)) for name, dtype in head.schema.items()]
    return table(columns, head.iter_rows())


def counts_table(label: str, counts: dict, count_label: str = "count") -> dg.MetadataValue:
    """A (label, count) table, largest count first."""
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return table([(label, "string"), (count_label, "int")], rows)


def means_table(keys: Sequence[str], means: Sequence, value_label: str = "mean expected score") -> dg.MetadataValue:
    return table(
        [("capability", "string"), (value_label, "float")],
        [(k, None if m is None else round(float(m), 3)) for k, m in zip(keys, means)],
    )


def backends_of(label: str) -> list[str]:
    """Backend names in a scorer label ("rules:model/prompts", "a:m/p + styles:rules:x/p", "x | y")."""
    parts = [p for one in label.split(" | ") for p in one.split(" + styles:")]
    return [p.removeprefix("styles:").split(":", 1)[0].split("/", 1)[0].split("@", 1)[0] for p in parts]


def scores_scorer_metadata(labels: Iterable[str | None]) -> dict:
    """Scorer metadata of a table holding per-row scorer labels (the scores table)."""
    found = sorted({label for label in labels if label})
    if not found:
        return {"scorer": dg.MetadataValue.text("unknown (no scorer label in the table)")}
    return scorer_metadata(" | ".join(found), [b for label in found for b in backends_of(label)])


def scorer_metadata(identity: str, backends: Sequence[str]) -> dict:
    """The scorer's identity, and the honest note when the weight-free rules backend produced scores."""
    meta: dict = {"scorer": dg.MetadataValue.text(identity)}
    if "rules" in backends:
        meta["scorer_note"] = dg.MetadataValue.text(RULES_NOTE)
    return meta


def _flatten(value):
    if isinstance(value, (list, tuple)):
        return ", ".join(str(_flatten(v)) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in value.items())
    return value


def path_md(path: Path | str) -> dg.MetadataValue:
    return dg.MetadataValue.path(str(path))


def first_human_turn(conversations) -> str:
    for turn in conversations or []:
        if turn.get("from") == "human":
            return turn.get("value") or ""
    return ""
