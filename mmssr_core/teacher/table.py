"""The `teacher_labels` table: one row per sample of a source whose content the teacher answered (or
failed on), with its scores, styles, the teacher's label and the failure reason."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import polars as pl

from mmssr_core.store import Store
from mmssr_core.taxonomy import Taxonomy
from mmssr_core.teacher.prompt import TeacherIdentity
from mmssr_core.teacher.sampling import read_pools

TEACHER_COLUMN = "teacher"
FAILURE_COLUMN = "failure"
MESSAGE_COLUMN = "failure_message"


def teacher_labels_schema(keys: Sequence[str]) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {"id": pl.Utf8, "source": pl.Utf8, "content_hash": pl.Utf8}
    schema.update({k: pl.Int8 for k in keys})
    schema["styles"] = pl.List(pl.Utf8)
    schema[TEACHER_COLUMN] = pl.Utf8
    schema[FAILURE_COLUMN] = pl.Utf8
    schema[MESSAGE_COLUMN] = pl.Utf8
    return schema


def build_teacher_table(
    store: Store, source: str, resolved: pl.DataFrame, identity: TeacherIdentity, taxonomy: Taxonomy
) -> pl.DataFrame:
    """Every sample of `source` whose content this teacher answered (or failed on), one row per id."""
    keys = taxonomy.keys
    schema = teacher_labels_schema(keys)
    pool = read_pools(store, [source]).select("id", "source", "content_hash")
    rows = pool.join(resolved, on="content_hash", how="inner")
    records = []
    for r in rows.iter_rows(named=True):
        rec: dict[str, Any] = {"id": r["id"], "source": r["source"], "content_hash": r["content_hash"]}
        if r["answer"] is not None:
            ans = json.loads(r["answer"])
            rec.update({k: ans["scores"].get(k) for k in keys})
            rec["styles"] = ans["styles"]
            rec[FAILURE_COLUMN] = None
            rec[MESSAGE_COLUMN] = None
        else:
            rec.update({k: None for k in keys})
            rec["styles"] = None
            rec[FAILURE_COLUMN] = r["reason"] or "unknown"
            rec[MESSAGE_COLUMN] = r["message"]
        rec[TEACHER_COLUMN] = identity.label()
        records.append(rec)
    return pl.DataFrame(records, schema=schema) if records else pl.DataFrame(schema=schema)
