"""Source folders of every shape an export must handle: text-only, single-image, multi-image, mixed,
with and without system prompts; real (small, textured) images, two samples sharing one picture."""

from __future__ import annotations

import json
from pathlib import Path

SHAPES = ("text", "single", "multi", "mixed")
SYSTEM = "You are a careful assistant. Answer briefly."
_IMAGES_PER_SAMPLE = {"text": [0, 0, 0, 0], "single": [1, 1, 1, 1], "multi": [2, 3, 2, 2], "mixed": [0, 1, 3, 1]}


def _picture(path: Path, seed: int) -> None:
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    arr = (rng.random((48, 64, 3)) * 255).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).filter(ImageFilter.GaussianBlur(2)).save(path, "JPEG" if seed % 2 else "PNG")


def write_shape_source(folder: Path, shape: str, system: bool) -> Path:
    """One source folder (pool.llava.json + img/) of `shape`; returns the folder."""
    rows = []
    for i, n in enumerate(_IMAGES_PER_SAMPLE[shape]):
        # the last sample reuses the first sample's first picture (content-deduplicated in the export)
        refs = [f"img/{shape}_{i}_{k}.{'jpg' if (i * 7 + k) % 2 else 'png'}" for k in range(n)]
        for k, ref in enumerate(refs):
            _picture(folder / ref, i * 7 + k)
        if i == 3 and n and _IMAGES_PER_SAMPLE[shape][0]:
            refs[0] = f"img/{shape}_0_0.png"
        rec: dict = {
            "id": f"{shape}-{i}",
            "conversations": [
                {"from": "human", "value": "<image>\n" * n + f"Question {i} about the {shape} sample?"},
                {"from": "gpt", "value": f"Answer {i}."},
                {"from": "human", "value": "And why?"},
                {"from": "gpt", "value": f"Because of reason {i}."},
            ],
        }
        if refs:
            rec["image"] = refs[0] if n == 1 else refs
        if system and i % 2 == 0:  # only some samples carry one: readers must not expect it everywhere
            rec["system"] = SYSTEM
        rows.append(rec)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pool.llava.json").write_text(json.dumps(rows, indent=1))
    return folder
