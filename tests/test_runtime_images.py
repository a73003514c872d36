"""Image files -> normalized NCHW inputs; masks -> palette PNGs; top-k."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mrdeploy.errors import InputError
from mrdeploy.runtime.images import load_input, preprocess, read_image, save_mask_png
from mrdeploy.runtime.modelinfo import InputInfo
from mrdeploy.runtime.postprocess import class_fractions, mask_from_logits, topk

INFO = InputInfo("input", 3, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))


def _rgb(h=5, w=7):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_preprocess_numbers():
    img = _rgb()
    x = preprocess(img, INFO)
    assert x.shape == (1, 3, 5, 7) and x.dtype == np.float32 and x.flags.c_contiguous
    expected = (img[2, 3, 1] / 255.0 - 0.25) / 0.25
    assert x[0, 1, 2, 3] == pytest.approx(expected, abs=1e-6)
    white = preprocess(np.full((2, 2, 3), 255, np.uint8), INFO)
    np.testing.assert_allclose(white[0, :, 0, 0], [1.0, 3.0, 1.0], atol=1e-6)
    no_norm = preprocess(img, InputInfo("input", 3))
    assert no_norm.max() <= 1.0 and no_norm[0, 0, 0, 0] == pytest.approx(img[0, 0, 0] / 255.0)
    with pytest.raises(InputError, match=r"expected an HxWx3 image, got shape \(5, 7, 4\)"):
        preprocess(np.zeros((5, 7, 4), np.uint8), INFO)


def test_read_png_jpeg_gray(tmp_path):
    img = _rgb(10, 12)
    Image.fromarray(img).save(tmp_path / "a.png")
    yy, xx = np.mgrid[0:10, 0:12]
    smooth = np.stack([yy * 20, xx * 20, yy * 10 + xx * 5], -1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), img)
    jpg = read_image(tmp_path / "a.jpg")
    assert jpg.shape == (10, 12, 3) and np.abs(jpg.astype(int) - smooth).mean() < 4  # lossy, but close
    gray = read_image(tmp_path / "a.png", channels=1)
    assert gray.shape == (10, 12, 1)
    x = load_input(tmp_path / "a.png", InputInfo("input", 1, mean=(0.5,), std=(0.5,)))
    assert x.shape == (1, 1, 10, 12)
    # a gray PNG feeds a 3-channel model as RGB
    Image.fromarray(img[..., 0]).save(tmp_path / "g.png")
    assert load_input(tmp_path / "g.png", INFO).shape == (1, 3, 10, 12)


def test_16bit_png_and_exif_orientation(tmp_path):
    a16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(a16).save(tmp_path / "d.png")
    got = read_image(tmp_path / "d.png", channels=1)[..., 0]
    assert got.dtype == np.uint16  # 16 bits kept: scaled by the type's range (65535) in preprocess
    np.testing.assert_array_equal(got, a16)
    img = Image.fromarray(_rgb(4, 6))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (6, 4, 3)


def test_npy_passthrough_and_bad_files(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    np.save(tmp_path / "x.npy", a)
    np.testing.assert_array_equal(load_input(tmp_path / "x.npy", INFO), a)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match=r"bad.png: cannot read the image .* expected a PNG or JPEG"):
        load_input(tmp_path / "bad.png", INFO)
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="t.jpg: cannot read the image"):
        load_input(tmp_path / "t.jpg", INFO)
    with pytest.raises(InputError, match="nope.png: no such image file"):
        load_input(tmp_path / "nope.png", INFO)
    (tmp_path / "bad.npy").write_bytes(b"nope")
    with pytest.raises(InputError, match="bad.npy: cannot read the .npy array"):
        load_input(tmp_path / "bad.npy", INFO)


def test_mask_png_and_postprocess(tmp_path):
    logits = np.zeros((1, 3, 4, 5), np.float32)
    logits[0, 2, :2] = 5.0
    logits[0, 1, 2:, :1] = 5.0
    mask = mask_from_logits(logits)
    assert mask.shape == (4, 5) and mask.dtype == np.uint8
    assert (mask[:2] == 2).all() and (mask[2:, 0] == 1).all() and (mask[2:, 1:] == 0).all()
    p = save_mask_png(mask, tmp_path / "m.png")
    im = Image.open(p)
    assert im.mode == "P"
    np.testing.assert_array_equal(np.asarray(im), mask)
    assert im.getpalette()[3:6] == [128, 0, 0]  # class 1: the VOC palette's dark red
    shares = class_fractions(mask, ["bg", "a", "b"])
    assert shares[0] == ("b", 0.5) and shares[1] == ("bg", 0.4) and shares[2][0] == "a"
    best = topk(np.array([0.0, 2.0, 1.0]), 2, ["x", "y", "z"])
    assert [b[1] for b in best] == ["y", "z"]
    assert best[0][2] == pytest.approx(np.exp(2) / (1 + np.exp(1) + np.exp(2)))
    assert topk(np.array([1.0, 0.0]), 5)[0][:2] == (0, "class 0")
