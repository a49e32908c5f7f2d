"""Column contracts of the tables the store holds (docs/ingestion.md, docs/method.md).

Every module that writes or reads a table takes its schema from here, so a renamed column fails loudly
in one place instead of silently in several.
"""

from __future__ import annotations

import polars as pl

# -- store table names: each defined once, here ----------------------------------------------------
RAW_POOL_TABLE = "raw_pool"  # accepted samples, one partition per source
QUARANTINE_TABLE = "quarantine"  # rejected samples with a reason code, per source
INGEST_STATS_TABLE = "ingest_stats"  # JSON sidecar per source: counts of the last ingest
IMAGES_DIR = "images"  # <store>/images/<source>/<sha256>.<ext>: embedded images written at ingest
CAPABILITY_TABLE = "capability_scores"  # per source
STYLE_TABLE = "style_labels"  # per source
FAILURE_TABLE = "score_failures"  # per source: targets without a result and why
SCORE_CACHE_TABLE = "score_cache"  # per scorer identity, append-only chunks
TEACHER_TABLE = "teacher_labels"  # per source
TEACHER_CACHE_TABLE = "teacher_cache"  # per teacher identity, append-only chunks
SCORES_TABLE = "scores"  # the pool-wide scores table
SELECTIONS_TABLE = "selections"  # per recipe
REPORTS_TABLE = "reports"  # per recipe
AGREEMENT_TABLE = "agreement"
DOWNSTREAM_TABLE = "downstream"
DUPLICATES_TABLE = "duplicates"  # duplicate groups, one partition per deduplication setting
POOL_PARTITION = "pool"  # the one partition of the pool-wide tables (scores, agreement)
SCORES_PARTITION = AGREEMENT_PARTITION = POOL_PARTITION

# Units: tables whose partitions are committed together (the names `Store.transaction` takes).
SOURCE_UNIT, SCORES_UNIT, SELECTION_UNIT, TEACHER_UNIT = "source", "scores", "selection", "teacher"

# Tables whose partitions are committed together, as one unit per partition: a reader sees every file of
# a unit from the same commit (see `mmssr_core.generations`).
COMMIT_UNITS: dict[str, tuple[str, ...]] = {
    SOURCE_UNIT: (RAW_POOL_TABLE, QUARANTINE_TABLE, INGEST_STATS_TABLE),
    SCORES_UNIT: (CAPABILITY_TABLE, STYLE_TABLE, FAILURE_TABLE),
    SELECTION_UNIT: (SELECTIONS_TABLE,),
    TEACHER_UNIT: (TEACHER_TABLE,),
}
UNIT_OF_TABLE: dict[str, str] = {t: unit for unit, tables in COMMIT_UNITS.items() for t in tables}

CONVERSATION_TURN = pl.Struct({"from": pl.Utf8, "value": pl.Utf8})

# One canonical sample per row; written by ingestion as the `raw_pool` table, one Parquet per source.
RAW_POOL_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Utf8,  # unique within a source; content-hash derived when the input has none
    "source": pl.Utf8,
    "position": pl.Int64,  # 0-based index of the record in the input file
    "images": pl.List(pl.Utf8),  # as written in the input (relative to image_root), original order
    "image_files": pl.List(pl.Utf8),  # absolute, resolved, checked paths (what scorers open)
    "image_formats": pl.List(pl.Utf8),  # real format sniffed from bytes: JPEG, PNG, WEBP, ...
    "image_widths": pl.List(pl.Int32),
    "image_heights": pl.List(pl.Int32),
    "image_phashes": pl.List(pl.UInt64),  # 64-bit perceptual hash per image (null if not hashable): near dedup
    "image_root": pl.Utf8,  # absolute image root of the source
    "conversations": pl.List(CONVERSATION_TURN),  # canonical LLaVA turns: from = human | gpt
    "system": pl.Utf8,  # a leading system prompt, if the input had one
    "text_only": pl.Boolean,
    "content_hash": pl.Utf8,  # sha256 over canonical text + image bytes
    "duplicate_of": pl.Utf8,  # id of the first accepted sample with the same content_hash, else null
    "input_format": pl.Utf8,  # llava | sharegpt | openai | parquet
    "metadata": pl.Utf8,  # JSON object of the input's extra fields
}

# Rejected input rows; read = accepted + quarantined for every source.
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.Utf8,
    "position": pl.Int64,
    "id": pl.Utf8,
    "reason": pl.Utf8,  # a code from REASONS
    "message": pl.Utf8,  # a human sentence naming the sample and the problem
}

# Reason codes of the quarantine table, with what they mean.
REASONS: dict[str, str] = {
    "malformed_record": "the record could not be parsed (bad JSON, wrong types)",
    "record_too_deep": "the record nests deeper than the limit (JSON depth)",
    "record_too_large": "the record's text is larger than the per-record limit",
    "id_too_long": "the id is longer than the limit",
    "metadata_too_large": "the record's extra fields take more than the limit as JSON",
    "unexpected_error": "checking the record failed in an unforeseen way (the message names the error)",
    "truncated_input": "the file ends inside the record (truncated JSON list); the rest could not be read",
    "bad_encoding": "the record is not valid UTF-8",
    "missing_conversations": "no conversation turns",
    "empty_turn": "a turn has no text",
    "unknown_role": "a turn's role is not human/gpt (user/assistant)",
    "bad_turn_order": "turns do not alternate starting with a human turn",
    "turn_too_long": "a turn's text exceeds the configured limit",
    "image_placeholder_mismatch": "<image> placeholders do not match the number of images",
    "image_placeholder_variant": "a turn holds a misspelt placeholder such as <image > or <IMAGE>",
    "image_unresolvable": "an image reference is not a local path (remote URL, empty, not a string)",
    "image_missing": "an image file does not exist",
    "image_empty": "an image file has zero bytes",
    "image_path_escapes_root": "an image path leaves the source's image root",
    "image_undecodable": "an image cannot be decoded (truncated or not an image)",
    "image_too_large": "an image's pixel count or file size exceeds the bound (decompression bomb)",
    "duplicate_id": "the id was already used by an earlier sample of the source",
}

# Members of duplicate groups (samples without a duplicate have no row): written by deduplication.
DUPLICATES_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.Utf8,
    "id": pl.Utf8,
    "group": pl.Utf8,  # "<source>/<id>" of the group's first member in pool order
    "group_size": pl.Int64,
    "kind": pl.Utf8,  # exact: shares its content hash with another member; near: joined by similarity only
}

SCORER_COLUMN = "scorer"


def argmax_column(key: str) -> str:
    return f"{key}__argmax"


def scores_schema(capability_keys: list[str], with_argmax: bool = True) -> dict[str, pl.DataType]:
    """The scores table (docs/method.md): what `mmssr scores` writes and `mmssr select` reads."""
    schema: dict[str, pl.DataType] = {"id": pl.Utf8, "source": pl.Utf8, "styles": pl.List(pl.Utf8)}
    for key in capability_keys:
        schema[key] = pl.Float64
    if with_argmax:
        for key in capability_keys:
            schema[argmax_column(key)] = pl.Int8
    schema[SCORER_COLUMN] = pl.Utf8
    return schema


def empty_frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)
