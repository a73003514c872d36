"""Images are decoded by their pixel type's range, through one path for runtime, calibration, parity
and planning; what cannot be decoded faithfully is refused with a message."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mrdeploy.errors import InputError
from mrdeploy.runtime.images import IMAGE_SUFFIXES, image_size, load_input, read_image
from mrdeploy.runtime.modelinfo import InputInfo

RAW = InputInfo("input", 3)  # no mean/std: the input is the pixel value in [0, 1]
RAW1 = InputInfo("input", 1)


def test_dark_16bit_png_stays_dark(tmp_path):
    a = np.linspace(0, 199, 48).astype(np.uint16).reshape(6, 8)  # max 199 of 65535
    Image.fromarray(a).save(tmp_path / "dark.png")
    x = load_input(tmp_path / "dark.png", RAW1)
    assert x.shape == (1, 1, 6, 8)
    assert x.max() == pytest.approx(199 / 65535, rel=1e-6)  # ~0.003, not 0.78
    np.testing.assert_allclose(x[0, 0], a / 65535.0, rtol=1e-6)


def test_float_tiff_is_read_by_value(tmp_path):
    f = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    Image.fromarray(f).save(tmp_path / "f.tif")
    x = load_input(tmp_path / "f.tif", RAW)
    assert x.shape == (1, 3, 4, 5)
    np.testing.assert_allclose(x[0, 0], f, atol=1 / 65535)  # not a black image
    Image.fromarray(f * 300).save(tmp_path / "hdr.tif")
    with pytest.raises(InputError, match=r"hdr.tif: a float \(mode F\) image with values 0..300; expected values in \[0, 1\]"):
        load_input(tmp_path / "hdr.tif", RAW)


def test_32bit_integer_tiff_is_refused(tmp_path):
    Image.fromarray(np.full((3, 3), 7, np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(InputError, match=r"i.tif: 32-bit integer pixels \(mode I, TIFF\) have no fixed brightness range"):
        read_image(tmp_path / "i.tif")


def _bomb_png(path, side=15000):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_a_message(tmp_path, cli):
    from tests.bundles import make_bundle

    png = _bomb_png(tmp_path / "huge.png")
    with pytest.raises(InputError, match="huge.png: refused by Pillow's decompression-bomb guard"):
        read_image(png)
    bundle = make_bundle(tmp_path / "b", "cls")
    code, out, err = cli("run", bundle, png)
    assert code == 1 and "Traceback" not in err
    assert "huge.png: refused by Pillow's decompression-bomb guard" in err and "MAX_IMAGE_PIXELS" in err


def test_one_list_of_extensions_and_one_decoder_everywhere():
    import mrdeploy.calibration.sources as sources
    import mrdeploy.evaldata as evaldata
    import mrdeploy.planning.sizes as plan
    import mrdeploy.runtime.images as images

    assert sources.IMAGE_SUFFIXES is images.IMAGE_SUFFIXES and plan.IMAGE_SUFFIXES is images.IMAGE_SUFFIXES
    assert sources.read_image is images.read_image
    assert not hasattr(evaldata, "IMAGE_SUFFIXES") and not hasattr(sources, "_read_image")


def test_calibration_and_planning_see_the_served_orientation(tmp_path):
    from mrdeploy.calibration.sources import load_folder
    from mrdeploy.planning import sizes_from

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(img).save(tmp_path / "cam.png", exif=exif)
    served = read_image(tmp_path / "cam.png")
    np.testing.assert_array_equal(served, np.rot90(img, -1))
    calib = load_folder(tmp_path, 1, seed=0).items[0][None]
    np.testing.assert_array_equal(calib, served)  # calibrated as it is served
    assert sizes_from(tmp_path) == [(10, 6)] == [image_size(tmp_path / "cam.png")]


def test_calibration_reads_16bit_by_its_range(tmp_path):
    from mrdeploy.calibration.preprocess import prepare

    a = np.full((8, 8), 199, np.uint16)
    Image.fromarray(a).save(tmp_path / "d.png")
    from mrdeploy.calibration.sources import load_folder

    item = load_folder(tmp_path, 1, seed=0).items[0]
    x = prepare(item, RAW, (8, 8))
    np.testing.assert_allclose(x, 199 / 65535, rtol=1e-5)


# --- every mode, every EXIF orientation ----------------------------------------------------------

ORIENT = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
          5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
          8: lambda a: np.rot90(a, 1)}
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]


def _expected(mode, a, channels):
    """What faithful decoding gives, computed without Pillow's conversions (P and CMYK use its palette
    and its CMYK formula; everything else is plain numpy)."""
    if mode == "1":
        g = a.astype(np.uint8) * 255
    elif mode in ("L", "LA"):
        g = a if mode == "L" else a[..., 0]
    elif mode == "I;16":
        g = a
    elif mode == "F":
        g = np.round(a * 65535).astype(np.uint16)
    else:
        g = None
    if g is not None:
        g = g[..., None]
        return np.repeat(g, 3, axis=2) if channels == 3 else g
    if mode == "P":
        rgb = PALETTE[a]
    elif mode in ("RGB", "RGBA"):
        rgb = a[..., :3]
    else:  # CMYK: Pillow's formula, R = (255 - K) - C * (255 - K) / 255, in its integer arithmetic
        nk = 255 - a[..., 3:4].astype(np.int64)
        t = a[..., :3].astype(np.int64) * nk + 128
        rgb = np.clip(nk - (((t >> 8) + t) >> 8), 0, 255)
    if channels == 1:
        r, g_, b = (rgb[..., i].astype(np.int64) for i in range(3))
        return ((r * 19595 + g_ * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]  # ITU-R 601-2
    return rgb.astype(np.uint8)


PALETTE = np.random.default_rng(1).integers(0, 256, (256, 3), dtype=np.uint8)


@st.composite
def images(draw):
    mode = draw(st.sampled_from(MODES))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    if mode == "1":
        a = rng.integers(0, 2, (h, w)).astype(bool)
    elif mode in ("L", "P"):
        a = rng.integers(0, 256, (h, w), dtype=np.uint8)
    elif mode in ("LA", "RGB", "RGBA", "CMYK"):
        a = rng.integers(0, 256, (h, w, {"LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]), dtype=np.uint8)
    elif mode == "I;16":
        a = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    elif mode == "I":
        a = rng.integers(-(2**31), 2**31, (h, w), dtype=np.int64).astype(np.int32)
    else:
        a = rng.random((h, w), dtype=np.float32)
    orientation = draw(st.sampled_from(sorted(ORIENT))) if mode not in ("CMYK", "I") else 1
    channels = draw(st.sampled_from([1, 3]))
    return mode, a, orientation, channels


def _save(mode, a, orientation, path):
    if mode == "P":
        im = Image.fromarray(a, "L").convert("P")
        im.putpalette(PALETTE.reshape(-1).tolist())
        im.frombytes(a.tobytes())  # the indices themselves, under our palette
    elif mode == "1":
        im = Image.fromarray(a)
    else:
        im = Image.fromarray(a, mode if mode in ("LA", "RGB", "RGBA", "CMYK") else None)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    path = path.with_suffix(".tif" if mode in ("CMYK", "I", "F") else ".png")
    im.save(path, exif=exif)
    return path


@settings(max_examples=200, deadline=None)
@given(images())
def test_every_mode_and_orientation_decodes_faithfully_or_is_refused(tmp_path_factory, case):
    mode, a, orientation, channels = case
    path = _save(mode, a, orientation, tmp_path_factory.mktemp("img") / "x")
    if mode == "I":
        with pytest.raises(InputError, match="32-bit integer pixels"):
            read_image(path, channels)
        return
    got = read_image(path, channels)
    want = ORIENT[orientation](_expected(mode, a, channels))
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    np.testing.assert_array_equal(got, want)
    assert path.suffix in IMAGE_SUFFIXES
