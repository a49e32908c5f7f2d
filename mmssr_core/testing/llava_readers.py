"""How LLaVA-1.5 and LLaVA-NeXT read a training file, restated for tests (their trainers need GPUs and
their whole packages; these follow the data-reading lines of `LazySupervisedDataset`).

LLaVA-1.5 (haotian-liu/LLaVA, llava/train/train.py): `json.load` of one JSON file; a sample with an
`image` key opens `os.path.join(image_folder, image)`, so `image` must be one string; samples without
`image` are text-only. LLaVA-NeXT (LLaVA-VL/LLaVA-NeXT, same file): `json.load` of a JSON file (JSON Lines
through its YAML dataset list), `image` a string or a list of strings, each opened under `image_folder`.
Both expect the `<image>` placeholders in the human turns to match the images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class LlavaReadError(ValueError):
    pass


def _load(path: Path, allow_jsonl: bool) -> list[dict]:
    if path.suffix == ".jsonl":
        if not allow_jsonl:
            raise LlavaReadError("LLaVA-1.5 reads one JSON file (json.load), not JSON Lines")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def _open(image_folder: Path, ref) -> None:
    from PIL import Image

    if not isinstance(ref, str):
        raise LlavaReadError(f"image reference {ref!r} is not a string")
    with Image.open(os.path.join(image_folder, ref)) as im:
        im.convert("RGB")


def _check_turns(rec: dict, n_images: int) -> None:
    conv = rec["conversations"]
    if not conv or conv[0]["from"] != "human":
        raise LlavaReadError(f"{rec.get('id')}: the first turn is not a human turn")
    if any(t["from"] not in ("human", "gpt") for t in conv):
        raise LlavaReadError(f"{rec.get('id')}: a turn is neither human nor gpt")
    tokens = sum(t["value"].count("<image>") for t in conv if t["from"] == "human")
    if tokens != n_images:
        raise LlavaReadError(f"{rec.get('id')}: {tokens} <image> placeholders for {n_images} images")


def read_llava15(path: Path, image_folder: Path) -> int:
    """Samples read the way LLaVA-1.5 reads them; raises LlavaReadError where it would fail."""
    records = _load(path, allow_jsonl=False)
    for rec in records:
        if "image" in rec:
            if not isinstance(rec["image"], str):
                raise LlavaReadError(f"{rec.get('id')}: LLaVA-1.5 takes one image per sample (a string)")
            _open(image_folder, rec["image"])
        _check_turns(rec, 1 if "image" in rec else 0)
    return len(records)


def read_llava_next(path: Path, image_folder: Path) -> int:
    """Samples read the way LLaVA-NeXT reads them; raises LlavaReadError where it would fail."""
    records = _load(path, allow_jsonl=True)
    for rec in records:
        refs = rec.get("image", [])
        refs = refs if isinstance(refs, list) else [refs]
        for ref in refs:
            _open(image_folder, ref)
        _check_turns(rec, len(refs))
    return len(records)
