"""A cheap, stable fingerprint of a local checkpoint directory: part of the scorer identity."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path


def checkpoint_revision(directory: str | Path) -> str:
    """A cheap fingerprint of a local checkpoint: the commit when it is a hub snapshot, else a hash of
    config.json and of each weight file's name, size and first/last 64 KiB (never the whole file)."""
    directory = Path(directory).resolve()
    m = re.search(r"snapshots/([0-9a-f]{40})(/|$)", directory.as_posix())
    if m:
        return m.group(1)[:12]
    h = hashlib.sha256()
    config = directory / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for f in sorted(directory.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file():
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(65536))
                if size > 65536:
                    fh.seek(max(size - 65536, 65536))
                    h.update(fh.read(65536))
    return h.hexdigest()[:12]
