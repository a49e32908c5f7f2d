"""Small helpers that turn store tables into Dagster metadata (Markdown tables, previews, paths)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import dagster as dg
import polars as pl


def _cell(value, width: int = 80) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def md_table(headers: Sequence[str], rows: Iterable[Sequence], width: int = 80) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v, width) for v in row) + " |")
    return "\n".join(lines)


def frame_md(df: pl.DataFrame, n: int = 5, width: int = 60) -> dg.MetadataValue:
    """The first `n` rows of a frame as a Markdown table (lists shown joined)."""
    head = df.head(n)
    rows = [[_flatten(v) for v in row] for row in head.iter_rows()]
    return dg.MetadataValue.md(md_table(head.columns, rows, width))


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
