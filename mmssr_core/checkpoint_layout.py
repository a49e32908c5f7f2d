"""The weight layout vLLM needs for LLaVA-OneVision, checked before an engine starts and fixed on request.

llava-hf checkpoints (and every converted mmSSR checkpoint) name the SigLIP tower
`vision_tower.vision_model.*`. Transformers 5 `save_pretrained` writes it without the `vision_model.` level
(`vision_tower.embeddings...`); transformers loads both, vLLM only the first, and fails deep inside its
engine process ("no module or parameter named 'vision_tower.embeddings'"). Checking the tensor names
(header only, no weights read) lets a run fail at once with the remedy, and `relayout` rewrites such a
checkpoint shard by shard.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

_TOWER = "vision_tower."
_LEVEL = "vision_tower.vision_model."


def tensor_names(model_dir: str | Path) -> list[str]:
    """Names of the tensors in a local safetensors checkpoint (from the index or the file headers)."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text())["weight_map"])
    from safetensors import safe_open

    names: list[str] = []
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            names.extend(fh.keys())
    return names


def flat_vision_tower_names(model_dir: str | Path) -> list[str]:
    """Vision-tower tensors stored without the `vision_model.` level (empty when the layout is right)."""
    return [n for n in tensor_names(model_dir) if n.startswith(_TOWER) and not n.startswith(_LEVEL)]


def check_vllm_layout(model_dir: str | Path) -> None:
    """Raise ValueError, naming the fix, when vLLM could not load this local checkpoint's vision tower."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return  # a hub name: nothing local to check
    flat = flat_vision_tower_names(model_dir)
    if flat:
        raise ValueError(
            f"{model_dir} stores its vision tower as {flat[0]!r} (the layout transformers 5 writes); vLLM "
            f"needs 'vision_tower.vision_model.*'. Rewrite it once with: "
            f"mmssr convert-checkpoint --relayout {model_dir} <new directory>"
        )


def _renamed(name: str) -> str:
    return _LEVEL + name[len(_TOWER) :] if name.startswith(_TOWER) and not name.startswith(_LEVEL) else name


def relayout(src: str | Path, dst: str | Path | None = None) -> int:
    """Write the checkpoint with `vision_tower.vision_model.*` names (in place when dst is None).

    Returns how many tensors were renamed. Other files are copied unchanged.
    """
    from safetensors.torch import load_file, save_file

    src = Path(src)
    out = Path(dst) if dst is not None else src
    if out != src:
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not empty")
        shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors"))
    renamed = 0
    for path in sorted(src.glob("*.safetensors")):
        tensors = load_file(str(path))
        fixed = {_renamed(k): v for k, v in tensors.items()}
        renamed += sum(k != _renamed(k) for k in tensors)
        save_file(fixed, str(out / path.name), metadata={"format": "pt"})
        del tensors, fixed
    index = out / "model.safetensors.index.json"
    if index.is_file():
        doc = json.loads(index.read_text())
        doc["weight_map"] = {_renamed(k): v for k, v in doc["weight_map"].items()}
        index.write_text(json.dumps(doc, indent=2) + "\n")
    return renamed
