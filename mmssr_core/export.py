"""Write a selection as training data: LLaVA JSON or ShareGPT / LLaMA-Factory JSON, in selection order.

Why a separate step: selection works on ids and scores only; export joins the chosen ids back to the
ingested conversations (table `raw_pool`) and rewrites image paths relative to the output file's folder,
so the file can be moved together with a relative image tree and read by LLaVA / LLaMA-Factory as is.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import polars as pl

from mmssr_core.store import Store, StoreError

FORMATS = ("llava", "sharegpt")
PLACEHOLDER = "<image>"
_COLUMNS = ["id", "source", "images", "image_files", "conversations", "system"]


class ExportError(ValueError):
    """A selection that cannot be exported (unknown ids, ambiguous ids, bad format); names the problem."""


def _selection_keys(selection: pl.DataFrame) -> pl.DataFrame:
    if "id" not in selection.columns:
        raise ExportError("the selection has no 'id' column")
    cols = ["id"] + (["source"] if "source" in selection.columns else [])
    sel = selection
    if "rank" in selection.columns:
        sel = sel.sort("rank", maintain_order=True)
    sel = sel.select([pl.col(c).cast(pl.Utf8) for c in cols]).with_row_index("_order")
    dup = sel.filter(pl.struct(cols).is_duplicated()).unique(cols, maintain_order=True)
    if dup.height:
        shown = ", ".join(repr(v) for v in dup["id"].head(10).to_list())
        raise ExportError(f"the selection lists {dup.height} id(s) twice: {shown}")
    return sel


def _load_rows(selection: pl.DataFrame, store: Store) -> pl.DataFrame:
    """The raw_pool rows of the selection, in selection order; refuses unknown and ambiguous ids."""
    sel = _selection_keys(selection)
    on = [c for c in ("source", "id") if c in sel.columns]
    try:
        scan = store.scan("raw_pool")
    except StoreError as exc:
        raise ExportError(f"no ingested pool to export from: {exc}") from None
    ids = sel["id"].unique()
    rows = scan.select(_COLUMNS).filter(pl.col("id").is_in(ids.implode())).collect()
    if on == ["id"]:
        amb = rows.group_by("id").agg(pl.col("source").unique().sort()).filter(pl.col("source").list.len() > 1)
        if amb.height:
            shown = ", ".join(f"{r['id']!r} (sources {r['source']})" for r in amb.head(10).iter_rows(named=True))
            raise ExportError(
                f"{amb.height} selected id(s) exist in several sources; give the selection a 'source' column: {shown}"
            )
    joined = sel.join(rows, on=on, how="left", maintain_order="left")
    missing = joined.filter(pl.col("conversations").is_null())
    if missing.height:
        if "source" in on:
            names = [f"{r['id']!r} (source {r['source']!r})" for r in missing.head(10).iter_rows(named=True)]
        else:
            names = [repr(v) for v in missing["id"].head(10).to_list()]
        more = f" and {missing.height - 10} more" if missing.height > 10 else ""
        raise ExportError(
            f"{missing.height} selected id(s) are not in the store's raw_pool: {', '.join(names)}{more}"
        )
    return joined.sort("_order")


def _rel_images(image_files: list[str] | None, images: list[str] | None, out_dir: str) -> list[str]:
    files = image_files if image_files else []
    if images and len(files) != len(images):
        raise ExportError(f"a sample lists {len(images)} image(s) but {len(files)} resolved file(s)")
    return [Path(os.path.relpath(f, out_dir)).as_posix() for f in files]


def _with_placeholders(conv: list[dict], n_images: int) -> list[dict]:
    """Ingestion guarantees one <image> per image; keep that true for data that bypassed it."""
    if n_images and not any(PLACEHOLDER in (t.get("value") or "") for t in conv):
        conv = [dict(t) for t in conv]
        conv[0]["value"] = (PLACEHOLDER + "\n") * n_images + conv[0]["value"]
    return conv


def to_llava(row: dict, images: list[str]) -> dict:
    rec: dict = {"id": row["id"]}
    if images:
        rec["image"] = images[0] if len(images) == 1 else images
    rec["conversations"] = [{"from": t["from"], "value": t["value"]} for t in _with_placeholders(row["conversations"], len(images))]
    if row.get("system"):
        rec["system"] = row["system"]
    return rec


def to_sharegpt(row: dict, images: list[str]) -> dict:
    roles = {"human": "user", "gpt": "assistant"}
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for t in _with_placeholders(row["conversations"], len(images)):
        messages.append({"role": roles.get(t["from"], t["from"]), "content": t["value"]})
    return {"id": row["id"], "messages": messages, "images": images}


def llamafactory_dataset_info(name: str, file_name: str, fmt: str) -> dict:
    """The `dataset_info.json` entry (as {name: entry}) that lets LLaMA-Factory read an exported file.

    Image paths in the file are relative to its folder: put dataset_info.json in that folder and use it
    as LLaMA-Factory's dataset_dir (its media_dir defaults to dataset_dir).
    """
    if fmt == "sharegpt":
        entry = {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"},
        }
    elif fmt == "llava":
        entry = {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "images": "image", "system": "system"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        }
    else:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return {name: entry}


def export_selection(selection: pl.DataFrame, store: Store, fmt: str, out_path: str | os.PathLike) -> dict:
    """Write the selected samples to `out_path` (.json: a JSON list; .jsonl: one record per line).

    Samples come out in selection order (by `rank` when the frame has it); they are matched on
    (source, id) when the selection has a `source` column, else on id. Image paths are made relative to
    the output file's folder. Raises ExportError naming unknown ids (first 10 and a count).
    Returns a summary: path, format, samples, images, seconds.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    t0 = time.perf_counter()
    out = Path(out_path).absolute()
    rows = _load_rows(selection, store)
    out_dir = str(out.parent.resolve())
    convert = to_llava if fmt == "llava" else to_sharegpt
    jsonl = out.suffix.lower() == ".jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    n_images = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if not jsonl:
                fh.write("[")
            for i, row in enumerate(rows.iter_rows(named=True)):
                images = _rel_images(row["image_files"], row["images"], out_dir)
                n_images += len(images)
                text = json.dumps(convert(row, images), ensure_ascii=False)
                if jsonl:
                    fh.write(text + "\n")
                else:
                    fh.write(("\n" if i == 0 else ",\n") + text)
            if not jsonl:
                fh.write("\n]\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {
        "path": str(out),
        "format": fmt,
        "samples": rows.height,
        "images": n_images,
        "seconds": round(time.perf_counter() - t0, 3),
    }
