"""Image checks: resolvable, inside the image root, a real decodable image of bounded size.

Each distinct file is checked once per run (cache keyed by resolved path, size and mtime), so a pool of
100k samples sharing 1k images decodes 1k images. The format is sniffed from the bytes (PIL identifies
by content, never by extension): a `.jpg` that is really WebP is recorded as WEBP.
Memory stays bounded whatever a file holds: the size is checked before anything is read, the header
before any pixel, and the content hash is streamed.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import Rejected
from .hashing import sha256_bytes

DEFAULT_MAX_PIXELS = 178_956_970  # 2 x PIL's MAX_IMAGE_PIXELS: where PIL itself raises DecompressionBombError
DEFAULT_MAX_IMAGE_BYTES = 256 * 1024 * 1024  # a larger file is refused before it is read

EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
    "MPO": "jpg",
    "ICO": "ico",
    "PPM": "ppm",
    "TGA": "tga",
    "JPEG2000": "jp2",
}
_EXT_OF_FORMAT = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "MPO": {".jpg", ".jpeg", ".mpo"},
    "PNG": {".png"},
    "WEBP": {".webp"},
    "GIF": {".gif"},
    "BMP": {".bmp"},
    "TIFF": {".tif", ".tiff"},
}


@dataclass(frozen=True)
class ImageInfo:
    file: str  # absolute resolved path of a checked file
    format: str
    width: int
    height: int
    sha256: str
    phash: int | None = None  # 64-bit perceptual hash (near-duplicate detection), None if not hashable


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


class ImageChecker:
    """Checks image references of one source against its image root; caches per run."""

    def __init__(
        self,
        root: str | os.PathLike,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        embedded_dir: str | os.PathLike | None = None,
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ):
        self.root = os.path.abspath(root)
        self.real_root = os.path.realpath(root)
        self.max_pixels = int(max_pixels)
        self.max_bytes = int(max_bytes)
        self.embedded_dir = Path(embedded_dir) if embedded_dir is not None else None
        self._by_ref: dict[str, ImageInfo | Rejected] = {}
        self._by_file: dict[tuple[str, int, int], ImageInfo | Rejected] = {}
        self._by_sha: dict[str, ImageInfo | Rejected] = {}
        self.decoded = 0  # distinct images decoded this run
        self.formats: Counter = Counter()
        self.extension_mismatch = 0

    # -- references to files ------------------------------------------------------------------
    def _resolve(self, ref: str) -> str:
        if not isinstance(ref, str) or not ref.strip() or "\x00" in ref:
            raise Rejected("image_unresolvable", f"image reference {ref!r} is empty or not a path")
        path = ref
        if ref[:5].lower() == "data:":  # normalisation decodes data: URLs; one here is a bug upstream
            raise Rejected("image_unresolvable", f"image {ref[:40]!r}... is a data: URL, not a file path")
        if "://" in ref:
            url = urlparse(ref)
            if url.scheme != "file":
                raise Rejected(
                    "image_unresolvable",
                    f"image {ref!r} is a {url.scheme} URL; only local files under the image root are used",
                )
            path = unquote(url.path)
        joined = path if os.path.isabs(path) else os.path.join(self.root, path)
        lexical = os.path.normpath(joined)
        if not _inside(lexical, self.root):
            raise Rejected(
                "image_path_escapes_root", f"image {ref!r} resolves to {lexical}, outside the image root {self.root}"
            )
        real = os.path.realpath(joined)
        if not _inside(real, self.real_root):
            raise Rejected(
                "image_path_escapes_root",
                f"image {ref!r} follows a symlink to {real}, outside the image root {self.real_root}",
            )
        return real

    def check_path(self, ref: str) -> ImageInfo:
        """Check the file `ref` names; each reference is resolved and stat'ed once per run."""
        info = self._by_ref.get(ref)
        if info is None:
            try:
                info = self._check_ref(ref)
            except Rejected as rej:
                info = rej
            self._by_ref[ref] = info
        if isinstance(info, Rejected):
            raise info
        return info

    def _check_ref(self, ref: str) -> ImageInfo:
        real = self._resolve(ref)
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise Rejected("image_missing", f"image {ref!r} does not exist ({real})") from None
        except OSError as exc:
            raise Rejected("image_missing", f"image {ref!r} cannot be read ({exc.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise Rejected("image_undecodable", f"image {ref!r} is not a regular file ({real})")
        key = (real, st.st_size, st.st_mtime_ns)  # several references may name the same file
        info = self._by_file.get(key)
        if info is None:
            info = self._check_file(ref, real, st.st_size)
            self._by_file[key] = info
        if isinstance(info, Rejected):
            raise info
        return info

    def _check_file(self, ref: str, real: str, size: int) -> ImageInfo | Rejected:
        if size == 0:
            return Rejected("image_empty", f"image {ref!r} is an empty file ({real})")
        if size > self.max_bytes:
            return Rejected(
                "image_too_large",
                f"image {ref!r} is a {size:,}-byte file, over the bound of {self.max_bytes:,} bytes ({real})",
            )
        try:
            with open(real, "rb") as fh:
                fmt, width, height, phash = self._decode(fh, f"image {ref!r}")
                fh.seek(0)
                sha = hashlib.file_digest(fh, "sha256").hexdigest()
        except Rejected as rej:
            return rej
        except OSError as exc:
            return Rejected("image_missing", f"image {ref!r} cannot be read ({exc.strerror or exc})")
        ext = os.path.splitext(real)[1].lower()
        if fmt in _EXT_OF_FORMAT and ext not in _EXT_OF_FORMAT[fmt]:
            self.extension_mismatch += 1
        return ImageInfo(real, fmt, width, height, sha, phash)

    # -- embedded bytes ------------------------------------------------------------------------
    def check_bytes(self, data: bytes, label: str = "embedded image") -> ImageInfo:
        """Check embedded image bytes and store them once under `embedded_dir/<sha256>.<ext>`."""
        if not data:
            raise Rejected("image_empty", f"{label} has zero bytes")
        if len(data) > self.max_bytes:
            raise Rejected("image_too_large", f"{label} has {len(data):,} bytes, over the bound of {self.max_bytes:,}")
        sha = sha256_bytes(data)
        info = self._by_sha.get(sha)
        if info is None:
            try:
                fmt, width, height, phash = self._decode(io.BytesIO(data), label)
                if self.embedded_dir is None:
                    raise RuntimeError("ImageChecker needs embedded_dir to store embedded images")
                path = self.embedded_dir / f"{sha}.{EXTENSIONS.get(fmt, fmt.lower())}"
                if not path.exists() or path.stat().st_size != len(data):
                    from mmssr_core.store import atomic_write_bytes

                    atomic_write_bytes(path, data)
                info = ImageInfo(str(path), fmt, width, height, sha, phash)
            except Rejected as rej:
                info = rej
            self._by_sha[sha] = info
        if isinstance(info, Rejected):
            raise info
        return info

    # -- decoding ------------------------------------------------------------------------------
    def _decode(self, fh, label: str) -> tuple[str, int, int, int | None]:
        """Sniff, bound and fully decode once from a binary file object; return (format, width, height,
        perceptual hash)."""
        from PIL import Image, UnidentifiedImageError

        from mmssr_core.dedup.image_hash import perceptual_hash

        self.decoded += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(fh) as im:  # reads the header only
                    fmt = im.format or "UNKNOWN"
                    width, height = im.size
                    if width <= 0 or height <= 0:
                        raise Rejected("image_undecodable", f"{label}: declares an empty size {width}x{height}")
                    if width * height > self.max_pixels:
                        raise Rejected(
                            "image_too_large",
                            f"{label}: declares {width}x{height} = {width * height:,} pixels, "
                            f"over the bound of {self.max_pixels:,}",
                        )
                    im.verify()
                fh.seek(0)
                with Image.open(fh) as im:
                    if fmt == "JPEG":
                        # decode the whole entropy-coded stream at 1/8 scale: truncation still fails
                        # (never below 64 px a side when the image is larger: the perceptual hash needs it)
                        im.draft(None, (max(1, width // 8, min(width, 64)), max(1, height // 8, min(height, 64))))
                    im.load()
                    phash = perceptual_hash(im)
        except Rejected:
            raise
        except Image.DecompressionBombError as exc:
            raise Rejected("image_too_large", f"{label}: {exc}") from None
        except UnidentifiedImageError:
            raise Rejected("image_undecodable", f"{label}: not a recognised image format") from None
        except MemoryError:
            raise Rejected("image_too_large", f"{label}: out of memory while decoding") from None
        except Exception as exc:  # truncated streams: OSError, SyntaxError, EOFError, struct.error, ...
            raise Rejected("image_undecodable", f"{label}: cannot be decoded ({type(exc).__name__}: {exc})") from None
        self.formats[fmt] += 1
        return fmt, int(width), int(height), phash

    def stats(self) -> dict:
        return {
            "decoded": self.decoded,
            "formats": dict(sorted(self.formats.items())),
            "extension_mismatch": self.extension_mismatch,
        }
