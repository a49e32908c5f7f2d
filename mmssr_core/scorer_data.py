"""Teacher labels -> LLaVA-format training conversations for a scorer and a styler (docs/teacher.md).

Each labelled sample gives one conversation per capability (user turn = `PromptSet.prefix(conversations)`
+ the scorer query of that capability, answer = the teacher's integer) and one style conversation (user
turn = prefix + the styler query, answer = the labels joined by ", "). These are exactly the inputs the
scorer sees at inference, so a model fine-tuned on this file (LLaVA-OneVision, qwen template, default
system prompt) is scored by `mmssr score` without any change. The `<image>` placeholder stays where the
conversation has it (the first one only: the scorer sees one image); an image without a placeholder
gets one in front, as every backend places it.

Records carry `image` (a path relative to the output file's folder, for LLaVA-NeXT's `--image_folder`)
and `images` (the same as a list, for LLaMA-Factory's sharegpt format), `conversations`, and
descriptive fields (`source`, `sample_id`, `target`) that both trainers ignore.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import polars as pl

from mmssr_core.prompts import IMAGE_TOKEN, PromptSet
from mmssr_core.schema import RAW_POOL_TABLE
from mmssr_core.store import Store, StoreError, atomic_write_bytes
from mmssr_core.taxonomy import Taxonomy, load_taxonomy

STYLE_TARGET = "styles"


def user_text(prompts: PromptSet, conversations: Sequence[dict], query: str, has_image: bool) -> str:
    """The scorer's user turn: prefix + query, with the image placeholder placed as the backends do."""
    text = prompts.prefix(conversations) + query
    if has_image and IMAGE_TOKEN not in text:
        return f"{IMAGE_TOKEN}\n{text}"
    if not has_image and IMAGE_TOKEN in text:
        return text.replace(f"{IMAGE_TOKEN}\n", "").replace(IMAGE_TOKEN, "")
    return text


@dataclass
class ExportResult:
    path: str
    samples: int  # labelled samples exported
    conversations: int
    per_target: dict[str, int] = field(default_factory=dict)
    skipped_failed: int = 0  # teacher failures (never exported)
    skipped_unlabelled_capabilities: list[str] = field(default_factory=list)  # in the taxonomy, not labelled
    dataset_info: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def export_scorer_data(
    store: Store,
    out_file: str | os.PathLike,
    *,
    sources: Sequence[str] | None = None,
    taxonomy: Taxonomy | None = None,
    capabilities: Sequence[str] | None = None,
    styles: bool = True,
    profile: str | None = None,
) -> ExportResult:
    """Write the training file (JSON list) and a LLaMA-Factory `dataset_info.json` entry beside it."""
    from mmssr_core.agreement import read_teacher_labels
    from mmssr_core.teacher.table import FAILURE_COLUMN

    taxonomy = taxonomy or load_taxonomy()
    prompts = PromptSet.from_taxonomy(taxonomy, profile=profile)
    keys = taxonomy.resolve(list(capabilities) if capabilities else None)
    labels = read_teacher_labels(store, sources)
    failed = labels.filter(pl.col(FAILURE_COLUMN).is_not_null()).height if FAILURE_COLUMN in labels.columns else 0
    good = labels.filter(pl.col(FAILURE_COLUMN).is_null()) if FAILURE_COLUMN in labels.columns else labels
    unlabelled = [k for k in keys if k not in good.columns]
    keys = [k for k in keys if k in good.columns]
    if good.is_empty():
        raise StoreError("no successful teacher label to export (run `mmssr label` first)")
    if not keys and not styles:
        raise StoreError(f"none of the capabilities is labelled: {unlabelled}")
    rows = _labelled_conversations(store, good)
    out = Path(out_file).resolve()
    records, per_target = _training_records(rows, prompts, keys, styles, out.parent)
    atomic_write_bytes(out, json.dumps(records, ensure_ascii=False, indent=1).encode("utf-8"))
    info_path = _register_dataset(out)
    return ExportResult(
        path=str(out),
        samples=rows.height,
        conversations=len(records),
        per_target=per_target,
        skipped_failed=failed,
        skipped_unlabelled_capabilities=unlabelled,
        dataset_info=str(info_path),
    )


def _labelled_conversations(store: Store, good: pl.DataFrame) -> pl.DataFrame:
    """The valid teacher labels joined to their samples' conversations and images, in a stable order."""
    pools = []
    for source in good["source"].unique().sort().to_list():
        try:
            pools.append(store.read(RAW_POOL_TABLE, source).select("id", "source", "image_files", "conversations"))
        except StoreError:
            raise StoreError(
                f"teacher labels of {source!r} have no raw_pool/{source} to take conversations from"
            ) from None
    pool = pl.concat(pools, how="vertical_relaxed")
    return good.join(pool, on=["source", "id"], how="inner").sort(["source", "id"])


def _training_records(
    rows: pl.DataFrame, prompts: PromptSet, keys: list[str], styles: bool, base: Path
) -> tuple[list[dict], dict[str, int]]:
    """One conversation per labelled target (capability score or styles) of each sample; image paths
    relative to the output folder. Returns the records and their count per target."""
    records: list[dict] = []
    per_target: dict[str, int] = {}
    query_of = dict(zip(prompts.capability_keys, prompts.capability_queries))
    for r in rows.iter_rows(named=True):
        convs = [{"from": t["from"], "value": t["value"]} for t in (r["conversations"] or [])]
        files = r["image_files"] or []
        image = os.path.relpath(files[0], base) if files else None
        common: dict = {"image": image, "images": [image]} if image else {}

        def add(target: str, query: str, answer: str) -> None:
            records.append(
                {
                    "id": f"{r['source']}/{r['id']}/{target}",
                    **common,
                    "conversations": [
                        {"from": "human", "value": user_text(prompts, convs, query, bool(files))},
                        {"from": "gpt", "value": answer},
                    ],
                    "source": r["source"],
                    "sample_id": r["id"],
                    "target": target,
                }
            )
            per_target[target] = per_target.get(target, 0) + 1

        for k in keys:
            v = r[k]
            if v is not None:
                add(k, query_of[k], str(int(v)))
        if styles and r.get("styles"):
            add(STYLE_TARGET, prompts.style_query, ", ".join(r["styles"]))
    return records, per_target


def _register_dataset(out: Path) -> Path:
    """Add (or replace) the file's entry in the `dataset_info.json` beside it, as LLaMA-Factory reads it."""
    info_path = out.parent / "dataset_info.json"
    info = {}
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text())
        except ValueError:
            info = {}
    info[out.stem] = {
        "file_name": out.name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }
    atomic_write_bytes(info_path, json.dumps(info, indent=2).encode())
    return info_path
