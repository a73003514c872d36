"""Image files -> model inputs, and segmentation masks -> PNG files. Pillow is imported on first use.

Preprocessing follows the model's InputInfo: RGB (or L for 1-channel inputs), the image keeps its own
size (fitting it to a profile — pad, resize, divisor — is the Runner's job), pixels scaled to [0, 1],
then ``(x - mean) / std`` per channel, HWC -> NCHW float32 with a batch axis of 1.
``.npy`` files are passed through unchanged (the Runner checks them).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mrdeploy.errors import InputError
from mrdeploy.runtime.modelinfo import InputInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading image files needs Pillow: pip install pillow") from None
    return Image


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """An image file as an HxWxC uint8 array (RGB for 3 channels, L for 1)."""
    if channels not in (1, 3):
        raise InputError(f"{path}: images can feed 1- or 3-channel inputs, the model expects {channels} channels")
    Image = _pil()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    from PIL import ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # camera JPEGs: apply the EXIF orientation
            if im.mode.startswith("I"):  # 16/32-bit gray: scale to 8 bits instead of clipping
                a16 = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(a16 / (257.0 if a16.max() > 255 else 1.0), 0, 255).astype(np.uint8))
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # Pillow: unknown format, truncated file, ...
        raise InputError(f"{path}: cannot read the image ({e}); expected a PNG or JPEG file") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def preprocess(image: np.ndarray, info: InputInfo) -> np.ndarray:
    """HxWxC (or HxW) uint8 pixels -> normalized 1xCxHxW float32, using ``info``'s mean and std."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[-1] != info.channels:
        raise InputError(
            f"input {info.name!r}: expected an HxWx{info.channels} image, got shape {tuple(a.shape)}"
        )
    if a.dtype == np.uint8:
        x = a.astype(np.float32) / 255.0
    elif a.dtype.kind == "f":
        x = a.astype(np.float32)  # already in [0, 1]
    else:
        raise InputError(f"input {info.name!r}: expected uint8 pixels or floats in [0, 1], got {a.dtype}")
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
        except (OSError, ValueError) as e:
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
