"""An export folder: the training file, its images and the LLaMA-Factory entry, movable as a whole.

    <folder>/<name>.json|.jsonl              the training file (LLaVA or ShareGPT records)
    <folder>/<name>.llamafactory.json|.jsonl ShareGPT copy of a LLaVA file, for LLaMA-Factory
    <folder>/images/ab/ab12....jpg           the selected images, once per content (copy/hardlink/symlink)
    <folder>/dataset_info.json               LLaMA-Factory's entry: use the folder as its dataset_dir

Every file is written atomically with mode 0644 (a training job running as another user can read it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import polars as pl

from mmssr_core.export.errors import ExportError
from mmssr_core.export.images import DIR_MODE, FILE_MODE, ImagePlacer
from mmssr_core.export.llamafactory import dataset_name, llamafactory_dataset_info, merge_dataset_info
from mmssr_core.export.records import CONVERTERS, FORMATS, to_sharegpt
from mmssr_core.export.rows import load_rows
from mmssr_core.store import Store, atomic_write_bytes


def _encode(records: list[dict], jsonl: bool) -> bytes:
    if jsonl:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    return (f"[\n{body}\n]\n" if records else "[]\n").encode()


def _image_paths(row: dict, placer: ImagePlacer) -> list[str]:
    files, refs = row["image_files"] or [], row["images"] or []
    if len(files) != len(refs):
        raise ExportError(
            f"sample {row['id']!r} ({row['source']}) lists {len(refs)} image(s) but {len(files)} resolved file(s)"
        )
    fmts = row.get("image_formats") or [None] * len(files)
    return [placer.path_for(f, fmt, row["image_root"]) for f, fmt in zip(files, fmts)]


def _make_folder(folder: Path) -> None:
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for p in missing:
        os.chmod(p, DIR_MODE)


def export_selection(
    selection: pl.DataFrame,
    store: Store,
    fmt: str,
    out_path: str | os.PathLike,
    *,
    images: str = "copy",
    image_prefix: str | None = None,
    name: str | None = None,
) -> dict:
    """Write the selected samples to `out_path` (.json: a JSON list, .jsonl: a record per line), their images
    and the LLaMA-Factory entry `name` (default: the file's stem) into the file's folder.

    Returns a summary: path, format, samples, images (references), image_files (placed in the folder),
    repeats_dropped, image_mode, dataset_name, dataset_info, llamafactory_file, seconds.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    t0 = time.perf_counter()
    out = Path(out_path).absolute()
    jsonl = out.suffix.lower() == ".jsonl"
    rows, repeats = load_rows(selection, store)
    folder = out.parent
    _make_folder(folder)
    placer = ImagePlacer(folder, images, image_prefix)
    main, lf, n_images = [], [], 0
    for row in rows.iter_rows(named=True):
        paths = _image_paths(row, placer)
        n_images += len(paths)
        main.append(CONVERTERS[fmt](row, paths))
        if fmt != "sharegpt":
            lf.append(to_sharegpt(row, paths))
    atomic_write_bytes(out, _encode(main, jsonl), mode=FILE_MODE)
    lf_file = out
    if fmt != "sharegpt":
        lf_file = out.with_name(f"{out.stem}.llamafactory{out.suffix}")
        atomic_write_bytes(lf_file, _encode(lf, jsonl), mode=FILE_MODE)
    ds_name = dataset_name(name or out.stem)
    info = merge_dataset_info(folder, llamafactory_dataset_info(ds_name, lf_file.name))
    return {
        "path": str(out),
        "format": fmt,
        "samples": rows.height,
        "images": n_images,
        "image_files": placer.files,
        "image_mode": images,
        "hardlink_fallback_copies": placer.fallback_copies,
        "repeats_dropped": repeats,
        "dataset_name": ds_name,
        "dataset_info": str(info),
        "llamafactory_file": str(lf_file),
        "seconds": round(time.perf_counter() - t0, 3),
    }
