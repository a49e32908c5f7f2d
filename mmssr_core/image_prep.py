"""The one image preparation every scorer backend (and the teacher) uses: what the model is shown.

For ordinary 8-bit images the pixels are exactly the reference's: decode, convert to RGB flattening any
transparency onto white (as transformers' `convert_to_rgb` does), squash to 384x384 with PIL's bicubic
filter. Two corrections apply to every image, since they only change images the reference would have
shown wrongly:
- EXIF orientation is applied (a phone photo stored sideways is shown upright, as a viewer shows it);
- images of more than 8 bits per sample are scaled into 0..255 instead of clipped: 16-bit grayscale
  (`I;16*`) by 255/65535; 32-bit integer (`I`) as 8-bit when all values fit 0..255, as 16-bit when they
  fit 0..65535, else stretched from its minimum to its maximum; float (`F`) by 255 when its values lie in
  0..1, as is when they lie in 0..255, else stretched (NaN shown as 0). Pillow's own conversion clips,
  which turned 16-bit images white and float images black.
Memory stays bounded: an image over REDUCED_DECODE_PIXELS is decoded at reduced size (JPEG `draft`, else
`reduce` right after decoding, before any colour conversion), keeping at least twice the target size on
each axis. Below that limit the full decode is kept, so results match the reference bit for bit.
"""

from __future__ import annotations

import warnings

import numpy as np

IMAGE_SIZE = 384  # the scorer sees one 384x384 RGB tile
# Above this many pixels a full decode plus RGBA flattening costs over a gigabyte: decode reduced instead.
REDUCED_DECODE_PIXELS = 64 * 1024 * 1024
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def load_scorer_image(path: str | None, size: int = IMAGE_SIZE):
    """The one image every backend sees: RGB, squashed to size x size, one tile (None for text-only)."""
    if not path:
        return None
    from PIL import Image

    return open_rgb(path, target=(size, size)).resize((size, size), Image.Resampling.BICUBIC)


def open_rgb(path: str, target: tuple[int, int] | None = None):
    """Decode an image as a person sees it: upright, 8-bit RGB, transparency flattened onto white.

    target: the size the caller will resize to, if known; it only matters above REDUCED_DECODE_PIXELS,
    where decoding keeps at least twice that size per axis (twice the scorer's 384 without it).
    """
    from PIL import Image, ImageOps

    want = target or (IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as src:
            big = src.size[0] * src.size[1] > REDUCED_DECODE_PIXELS
            if big and src.format == "JPEG":
                src.draft(None, _draft_size(src.size, want))
            src.load()
            im = _reduce(src, want) if big else src
            ImageOps.exif_transpose(im, in_place=True)
            out = to_rgb(im)
            return out.copy() if out is src else out  # never hand out the image the `with` closes


def to_rgb(im):
    """8-bit RGB of any Pillow mode (see the module docstring for the rules)."""
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = _scale_to_8bit(im)
    elif im.mode == "La":
        im = im.convert("LA")
    if im.mode == "RGB":
        return im
    transparent = im.mode in _ALPHA_MODES or "transparency" in im.info
    if not transparent:
        return im.convert("RGB")
    rgba = im.convert("RGBA")  # transformers' convert_to_rgb: composite onto white
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_8bit(im):
    from PIL import Image

    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        out = (a.astype(np.uint32) * 255 + 32767) // 65535
        return Image.fromarray(out.astype(np.uint8), "L")
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
    if im.mode == "F" and lo >= 0 and hi <= 1:
        scaled = a * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = a
    elif im.mode == "I" and lo >= 0 and hi <= 65535:
        scaled = a * 255.0 / 65535.0
    else:
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    scaled = np.where(finite, scaled, 0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _draft_size(size: tuple[int, int], want: tuple[int, int]) -> tuple[int, int]:
    scale = min(size[0] / (2 * want[0]), size[1] / (2 * want[1]), 8.0)
    scale = max(scale, 1.0)
    return max(1, int(size[0] / scale)), max(1, int(size[1] / scale))


def _reduce(im, want: tuple[int, int]):
    """Box-reduce a decoded image per axis to at least twice `want`, in its own mode (before any copy)."""
    fx = max(1, im.size[0] // (2 * want[0]))
    fy = max(1, im.size[1] // (2 * want[1]))
    if fx == fy == 1:
        return im.copy()
    if im.mode in ("P", "1", "PA"):  # palettes cannot be averaged: expand first
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    if im.mode.startswith("I;16"):
        im = im.convert("I")
    return im.reduce((fx, fy))
