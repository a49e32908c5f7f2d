"""The scorer sees what a person sees: every Pillow mode against its expected pixels, EXIF orientation,
the reference's exact pixels for ordinary 8-bit images, and bounded memory on huge images."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from mmssr_core import image_prep
from mmssr_core.image_prep import load_scorer_image, open_rgb, to_rgb
from mmssr_core.prompts import load_scorer_image as reexported


def _reference(path):
    """The reference pixel path, restated: decode, flatten onto white (transformers), squash bicubic."""
    with Image.open(path) as im:
        im.load()
        if im.mode != "RGB":
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return im.convert("RGB").resize((384, 384), Image.Resampling.BICUBIC)


def _noise(mode, size=(97, 61), seed=0):
    rng = np.random.default_rng(seed)
    bands = len(Image.new(mode, (1, 1)).getbands())
    arr = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    if mode in ("1", "L", "P"):
        return Image.fromarray(arr[..., 0], "L").convert(mode)
    return Image.frombytes(mode, size, arr.tobytes())


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("RGB", "PNG"),
        ("RGB", "JPEG"),
        ("RGBA", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("1", "PNG"),
        ("CMYK", "JPEG"),
        ("L", "JPEG"),
        ("RGBA", "WEBP"),
        ("P", "GIF"),
    ],
)
def test_ordinary_8bit_images_get_exactly_the_reference_pixels(tmp_path, mode, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    im = _noise(mode)
    if mode == "P" and fmt == "PNG":
        im.info["transparency"] = 3
    im.save(path, fmt, **({"transparency": 3} if mode == "P" else {}))
    ours = np.asarray(load_scorer_image(str(path)))
    assert ours.shape == (384, 384, 3)
    assert np.array_equal(ours, np.asarray(_reference(path)))
    assert reexported is load_scorer_image  # the backends' import keeps working


def _uniform(tmp_path, mode, value, fmt="TIFF", name="u"):
    path = tmp_path / f"{name}.{fmt.lower()}"
    Image.new(mode, (8, 6), value).save(path, fmt)
    return path


@pytest.mark.parametrize(
    "mode,value,fmt,expected",
    [
        ("I;16", 40000, "PNG", 156),  # 40000 * 255 / 65535 = 155.6
        ("I;16", 65535, "PNG", 255),
        ("I;16B", 20000, "TIFF", 78),
        ("I", 40000, "TIFF", 156),  # fits 16 bits: scaled as 16-bit
        ("I", 200, "TIFF", 200),  # fits 8 bits: kept
        ("F", 0.5, "TIFF", 128),  # 0..1 floats: times 255
        ("F", 1.0, "TIFF", 255),
        ("F", 77.0, "TIFF", 77),  # 0..255 floats: kept
    ],
)
def test_high_bit_depth_modes_are_scaled_not_clipped(tmp_path, mode, value, fmt, expected):
    path = _uniform(tmp_path, mode, value, fmt)
    with Image.open(path) as im:
        assert im.mode == mode  # the file really decodes in the mode under test
    px = np.asarray(open_rgb(str(path)))
    assert px.shape == (6, 8, 3) and (px == expected).all(), (mode, value, px[0, 0])


@pytest.mark.parametrize("mode,lo,hi", [("I", -5, 10_000_000), ("F", -2.5, 1000.0)])
def test_wide_range_integer_and_float_images_are_stretched(tmp_path, mode, lo, hi):
    arr = np.zeros((4, 10), dtype=np.int32 if mode == "I" else np.float32)
    arr[:, 5:] = hi
    arr[:, :5] = lo
    arr[0, 0] = (lo + hi) / 2
    path = tmp_path / "w.tiff"
    Image.fromarray(arr, mode).save(path)
    px = np.asarray(open_rgb(str(path)))[..., 0]
    assert px[1, 0] == 0 and px[1, 9] == 255 and px[0, 0] in (127, 128)


def test_nan_pixels_are_black_and_do_not_poison_the_rest(tmp_path):
    arr = np.full((2, 2), 0.5, dtype=np.float32)
    arr[0, 0] = np.nan
    path = tmp_path / "n.tiff"
    Image.fromarray(arr, "F").save(path)
    px = np.asarray(open_rgb(str(path)))[..., 0]
    assert px[0, 0] == 0 and px[1, 1] == 128


@pytest.mark.parametrize(
    "mode,value", [("RGBa", (0, 0, 0, 0)), ("La", (0, 0)), ("LA", (0, 0)), ("PA", (0, 0)), ("RGBA", (10, 20, 30, 0))]
)
def test_transparent_pixels_are_white_in_every_alpha_mode(mode, value):
    px = np.asarray(to_rgb(Image.new(mode, (3, 3), value)))
    assert (px == 255).all(), (mode, px[0, 0])


@pytest.mark.parametrize(
    "mode,value,expected",
    [
        ("YCbCr", (128, 128, 128), (128, 128, 128)),
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("LAB", (128, 128, 128), (119, 119, 119)),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
        ("1", 1, (255, 255, 255)),
    ],
)
def test_other_colour_modes_convert_to_what_they_mean(mode, value, expected):
    assert to_rgb(Image.new(mode, (2, 2), value)).getpixel((0, 0)) == expected


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path, fmt):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    arr[:, 20:] = (0, 0, 255)  # right half blue
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # stored sideways: a viewer rotates it 90 degrees clockwise
    path = tmp_path / f"o.{fmt.lower()}"
    im.save(path, fmt, exif=exif.tobytes())
    out = open_rgb(str(path))
    assert out.size == (20, 40)
    top, bottom = np.asarray(out)[5, 10], np.asarray(out)[35, 10]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # left became top


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_images_over_the_pixel_limit_are_decoded_reduced(tmp_path, monkeypatch, fmt):
    path = tmp_path / f"big.{fmt.lower()}"
    im = Image.fromarray(np.tile(np.linspace(0, 255, 2400, dtype=np.uint8), (1800, 1))).convert("RGB")
    im.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    full = np.asarray(load_scorer_image(str(path)), dtype=np.int16)
    calls = []
    monkeypatch.setattr(image_prep, "REDUCED_DECODE_PIXELS", 1_000_000)
    real_reduce = Image.Image.reduce
    monkeypatch.setattr(
        Image.Image, "reduce", lambda self, f, *a: calls.append(("reduce", self.size)) or real_reduce(self, f, *a)
    )
    reduced = np.asarray(load_scorer_image(str(path)), dtype=np.int16)
    assert reduced.shape == (384, 384, 3) and np.abs(reduced - full).mean() < 3
    if fmt == "PNG":
        assert calls and calls[0][1] == (2400, 1800)
    else:  # JPEG decodes straight at 1/2 scale (2400/1200 >= 2 x 384)
        with Image.open(path) as src:
            src.draft(None, image_prep._draft_size(src.size, (384, 384)))
            assert src.size == (1200, 900)


def test_a_huge_image_costs_a_bounded_amount_of_memory(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("LA", (9000, 8000), (90, 128)).save(path)  # 72 Mpx, 144 MB decoded, a few KB on disk
    script = textwrap.dedent(f"""
        import resource
        from mmssr_core.image_prep import load_scorer_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        im = load_scorer_image({str(path)!r})
        assert im.size == (384, 384), im.size
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grew_mb = int(out.stdout.strip())
    # a full decode plus RGBA flattening would take over 1 GB here; reduced decoding keeps the LA decode
    assert grew_mb < 400, f"peak memory grew by {grew_mb} MB"
