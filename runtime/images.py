"""Image files -> model inputs, and segmentation masks -> PNG files. Pillow is imported on first use.

This is the one image path of mrdeploy: the runtime (``mrdeploy run``), calibration, parity and profile
planning all read images through :func:`read_image` / :func:`image_size` and list them with
:func:`image_files` (one list of extensions, :data:`IMAGE_SUFFIXES`).

Decoding is faithful to the pixel type's range, never to the data's own maximum:

- 8-bit modes (1, L, LA, P, PA, RGB, RGBA, RGBa, CMYK, YCbCr, HSV): converted by Pillow to RGB (or L
  for 1-channel inputs), as uint8 (0..255); alpha is dropped.
- 16-bit gray (I;16, I;16B, I;16L, I;16N, and mode I as Pillow opens 16-bit PNG/PGM files): uint16
  (0..65535): a dark 16-bit image stays dark.
- 32-bit float (F): values must be finite and within [0, 1]; they become uint16 (steps of 1/65535).
- Anything else (32-bit integer TIFFs, LAB, ...) has no range to decode by: an InputError says so.
- The EXIF orientation is applied (camera JPEGs), for pixels and for sizes alike.
- Pillow's decompression-bomb guard and unreadable files become an InputError naming the file.

Preprocessing follows the model's InputInfo: the image keeps its own size (fitting it to a profile —
pad, resize, divisor — is the Runner's job), pixels scaled to [0, 1] by their type's maximum, then
``(x - mean) / std`` per channel, HWC -> NCHW float32 with a batch axis of 1.
``.npy`` files are passed through unchanged (the Runner checks them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mrdeploy.errors import InputError
from mrdeploy.runtime.modelinfo import InputInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
_EIGHT_BIT = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_SIXTEEN_BIT_I = ("PNG", "PPM")  # formats whose mode-I images hold 16-bit samples (0..65535)


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading image files needs Pillow: pip install pillow") from None
    return Image


def image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file under ``root`` (recursive, by :data:`IMAGE_SUFFIXES`), sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@contextlib.contextmanager
def open_image(path: str | os.PathLike) -> Iterator:
    """The Pillow image of ``path`` (header read, pixels not yet decoded); every failure an InputError."""
    Image = _pil()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise InputError(
            f"{path}: refused by Pillow's decompression-bomb guard ({e}); expected at most "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels: downscale the image, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS in Python if you trust the file"
        ) from None
    except Exception as e:  # Pillow raises many types for broken files: unknown format, truncated header, ...
        raise InputError(f"{path}: cannot read the image ({e}); expected a PNG or JPEG file "
                         f"(or another of {', '.join(IMAGE_SUFFIXES)})") from None
    try:
        yield im
    finally:
        im.close()


def _oriented(im):
    """``im`` with its EXIF orientation applied (a camera JPEG's pixels as the camera meant them)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(im)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image as :func:`read_image` returns it (EXIF orientation applied), from
    its header only."""
    with open_image(path) as im:
        w, h = im.size
        try:
            rotated = im.getexif().get(0x0112) in (5, 6, 7, 8)  # transposed or rotated by 90/270 degrees
        except Exception:  # a broken EXIF block: read_image would not rotate either
            rotated = False
    return (w, h) if rotated else (h, w)


def decode(im, channels: int = 3, where: str = "image") -> np.ndarray:
    """A Pillow image -> HxWxC pixels by its type's range: uint8 for 8-bit modes, uint16 for 16-bit
    and float images (see the module docstring); RGB for 3 channels, gray for 1."""
    if channels not in (1, 3):
        raise InputError(f"{where}: images can feed 1- or 3-channel inputs, the model expects {channels} channels")
    mode, fmt = im.mode, im.format
    try:
        im = _oriented(im)
        if mode in _EIGHT_BIT:
            a = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        elif mode in _SIXTEEN_BIT or (mode == "I" and fmt in _SIXTEEN_BIT_I):
            a = np.asarray(im).astype(np.uint16)  # Pillow's I;16 arrays are uint16 in native order
        elif mode == "F":
            f = np.asarray(im, dtype=np.float32)
            bad = int(np.size(f) - np.count_nonzero(np.isfinite(f)))
            if bad:
                raise InputError(f"{where}: a float (mode F) image with {bad} NaN/Inf pixels; expected finite values in [0, 1]")
            if f.size and (f.min() < 0 or f.max() > 1):
                raise InputError(f"{where}: a float (mode F) image with values {f.min():.6g}..{f.max():.6g}; "
                                 "expected values in [0, 1] (mrdeploy does not guess another range)")
            a = np.round(f * 65535.0).astype(np.uint16)
        elif mode == "I":
            raise InputError(f"{where}: 32-bit integer pixels (mode I, {fmt or 'unknown format'}) have no fixed "
                             "brightness range; expected 8- or 16-bit integer or [0, 1] float pixels")
        else:
            raise InputError(f"{where}: cannot decode pixel mode {mode!r} faithfully; expected one of "
                             f"{', '.join(_EIGHT_BIT + _SIXTEEN_BIT)}, I (16-bit PNG/PGM) or F")
    except InputError:
        raise
    except Exception as e:  # Pillow raises many types for broken data: truncated, a broken EXIF block, ...
        raise InputError(f"{where}: cannot read the image ({e}); the file is truncated or corrupt") from None
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[-1] == 1 and channels == 3:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """An image file as HxWxC pixels: uint8 (8-bit files) or uint16 (16-bit and float files), RGB for
    3 channels, gray for 1, EXIF orientation applied."""
    if channels not in (1, 3):
        raise InputError(f"{path}: images can feed 1- or 3-channel inputs, the model expects {channels} channels")
    with open_image(path) as im:
        return decode(im, channels, str(path))


def to_unit(a: np.ndarray, where: str = "image") -> np.ndarray:
    """Pixels -> float32 in [0, 1] by their type's range: uint8 / 255, uint16 / 65535, floats as they are."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype.kind == "f":
        return a.astype(np.float32)  # already in [0, 1]
    raise InputError(f"{where}: expected uint8 or uint16 pixels or floats in [0, 1], got {a.dtype}")


def preprocess(image: np.ndarray, info: InputInfo) -> np.ndarray:
    """HxWxC (or HxW) pixels (uint8, uint16 or floats in [0, 1]) -> normalized 1xCxHxW float32, using
    ``info``'s mean and std."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[-1] != info.channels:
        raise InputError(
            f"input {info.name!r}: expected an HxWx{info.channels} image, got shape {tuple(a.shape)}"
        )
    x = to_unit(a, f"input {info.name!r}")
    if info.mean is not None:
        x = x - np.asarray(info.mean, np.float32).reshape(1, 1, -1)
    if info.std is not None:
        x = x / np.asarray(info.std, np.float32).reshape(1, 1, -1)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def load_input(path: str | os.PathLike, info: InputInfo) -> np.ndarray:
    """A file given on the command line -> the array fed to the Runner: images are read and
    preprocessed, ``.npy`` arrays are loaded as they are."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f"{path}: cannot read the .npy array ({e})") from None
    return preprocess(read_image(path, info.channels), info)
def palette() -> list[int]:
    """A fixed, distinct RGB colour per class (the PASCAL VOC bit-interleaved palette), flattened."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def save_mask_png(mask: np.ndarray, path: str | os.PathLike) -> Path:
    """An HxW class-index mask (< 256 classes) as a palette PNG."""
    from mrdeploy._atomic import atomic_file

    Image = _pil()
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"a mask must be HxW class indices, got shape {m.shape}")
    if m.size and (m.min() < 0 or m.max() > 255):
        raise InputError(f"a palette PNG holds class indices 0..255, got {m.min()}..{m.max()}")
    im = Image.fromarray(m.astype(np.uint8))  # mode L; putpalette makes it P
    im.putpalette(palette())
    path = Path(path)
    with atomic_file(path) as tmp:
        im.save(tmp, format="PNG")
    return path
