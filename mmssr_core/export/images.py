"""Where the exported images live, so the export folder can be moved or synced as a whole.

Modes (the path written into the training file, relative to the export folder unless absolute):
- copy (default): each distinct image (by content) once under `images/<sha256[:2]>/<sha256>.<ext>`;
- hardlink: the same names as hard links to the ingested files (no extra disk), a copy where a link
  cannot be made (another file system) or the source is not readable by everyone;
- symlink: the same names as links to the ingested files: survives moving the folder on this machine only;
- absolute: no images in the folder, the absolute ingested paths;
- prefix: no images in the folder, `<prefix>/<image root folder name>/<path inside it>`, for a training
  machine that holds the same source folders under `prefix`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from mmssr_core.export.errors import ExportError
from mmssr_core.store import atomic_symlink, atomic_write, remove_orphan_temps

MODES = ("copy", "hardlink", "symlink", "absolute", "prefix")
IMAGES_DIR = "images"
FILE_MODE = 0o644
DIR_MODE = 0o755
_CHUNK = 1 << 20


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _extension(fmt: str | None, path: str) -> str:
    from mmssr_core.ingest.images import EXTENSIONS

    return "." + EXTENSIONS[fmt] if fmt in EXTENSIONS else (Path(path).suffix.lower() or ".img")


class ImagePlacer:
    """Turns ingested image files into the paths a training file names, placing files as the mode says."""

    def __init__(self, out_dir: Path, mode: str = "copy", prefix: str | None = None):
        if mode not in MODES:
            raise ExportError(f"unknown image mode {mode!r}; choose one of {', '.join(MODES)}")
        if (mode == "prefix") != bool(prefix):
            raise ExportError("an image prefix goes with the 'prefix' mode (and only with it)")
        self.out_dir, self.mode, self.prefix = out_dir, mode, (prefix or "").rstrip("/")
        self._done: dict[str, str] = {}  # ingested file -> path written
        self.files = 0  # files placed in the folder
        self.fallback_copies = 0  # hard links that had to be copies
        self._folders: set[Path] = set()  # image folders made (and cleaned of orphan temps) in this export

    def path_for(self, file: str, fmt: str | None, image_root: str) -> str:
        got = self._done.get(file)
        if got is None:
            got = self._done[file] = self._place(file, fmt, image_root)
        return got

    def _place(self, file: str, fmt: str | None, image_root: str) -> str:
        if not os.path.isfile(file):
            raise ExportError(f"image {file} no longer exists (re-ingest the source)")
        if self.mode == "absolute":
            return os.path.abspath(file)
        if self.mode == "prefix":
            rel = os.path.relpath(file, os.path.dirname(os.path.abspath(image_root)))
            return f"{self.prefix}/{Path(rel).as_posix()}"
        sha = _sha256(file)
        rel = f"{IMAGES_DIR}/{sha[:2]}/{sha}{_extension(fmt, file)}"
        dest = self.out_dir / rel
        if not os.path.lexists(dest):
            self._make(file, dest)
            self.files += 1
        return rel

    def _make(self, file: str, dest: Path) -> None:
        """Place one image under its final name through the store's atomic helpers (never half a file)."""
        if dest.parent not in self._folders:
            for d in (dest.parent.parent, dest.parent):
                d.mkdir(exist_ok=True)
                os.chmod(d, DIR_MODE)
            remove_orphan_temps(dest.parent)  # left by a killed export
            self._folders.add(dest.parent)
        if self.mode == "symlink":
            atomic_symlink(os.path.realpath(file), dest)
        else:  # copies are cheap to make again: no fsync per image
            atomic_write(dest, lambda tmp: self._fill(file, tmp), durable=False)

    def _fill(self, file: str, tmp: str) -> None:
        if self.mode == "hardlink" and self._linkable(file):
            os.unlink(tmp)  # the link takes the temp file's name
            try:
                os.link(file, tmp)
                return
            except OSError:  # another file system, or links not allowed here
                self.fallback_copies += 1
        self._copy(file, tmp)

    def _linkable(self, file: str) -> bool:
        """A link shares the source's permissions: only link files every user may read."""
        ok = stat.S_IMODE(os.stat(file).st_mode) & 0o444 == 0o444
        self.fallback_copies += not ok
        return ok

    def _copy(self, file: str, tmp: str) -> None:
        with open(file, "rb") as src, open(tmp, "wb") as dst:
            for block in iter(lambda: src.read(_CHUNK), b""):
                dst.write(block)
        os.chmod(tmp, FILE_MODE)
