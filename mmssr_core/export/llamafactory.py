"""LLaMA-Factory's view of an export folder: its `dataset_info.json` entry.

The entry describes a ShareGPT-shaped file (`messages` with role/content, `images` always a list) and
no separate system column: a system prompt travels as the first message, which LLaMA-Factory reads as
the system turn. Image paths are relative to the folder, which is LLaMA-Factory's `dataset_dir` (its
`media_dir` defaults to it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mmssr_core.export.errors import ExportError

INFO_FILE = "dataset_info.json"
FILE_MODE = 0o644


def dataset_name(text: str) -> str:
    """A dataset name from a file stem: `mmssr_10%` -> `mmssr_10pct`."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("%", "pct")).strip("_.")
    if not name:
        raise ExportError(f"cannot make a dataset name from {text!r}; give one")
    return name


def llamafactory_dataset_info(name: str, file_name: str) -> dict:
    """{name: entry} for a ShareGPT-shaped file written by this package."""
    return {
        name: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }


def merge_dataset_info(folder: Path, entry: dict) -> Path:
    """Add or replace the entry in `folder/dataset_info.json` (other datasets listed there are kept)."""
    from mmssr_core.store import atomic_write_bytes

    path = folder / INFO_FILE
    info: dict = {}
    if path.exists():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ExportError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(info, dict):
            raise ExportError(f"{path} does not hold a JSON object")
    info.update(entry)
    atomic_write_bytes(path, (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode(), mode=FILE_MODE)
    return path
