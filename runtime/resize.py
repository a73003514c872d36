"""Bilinear resize of NCHW arrays in numpy (separable, no cv2 / Pillow in the serving path).

Half-pixel centers, edge clamped, no antialiasing: the same as
``torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False)`` and ONNX
``Resize(mode="linear", coordinate_transformation_mode="half_pixel")``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=256)
def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and the weight of the second one."""
    scale = size_in / size_out
    src = (np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, size_in - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = (src - lo).astype(np.float32)
    lo.setflags(write=False)
    hi.setflags(write=False)
    frac.setflags(write=False)
    return lo, hi, frac


def resize_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear interpolation of one axis to ``size`` samples."""
    n = x.shape[axis]
    if n == size:
        return x
    lo, hi, frac = _taps(n, size)
    a = np.take(x, lo, axis=axis)
    b = np.take(x, hi, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = size
    w = frac.reshape(shape).astype(x.dtype, copy=False)
    return a + (b - a) * w


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of ``x`` (float) to ``size`` = (H, W)."""
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    h, w = int(size[0]), int(size[1])
    out = resize_axis(x, h, x.ndim - 2)
    out = resize_axis(out, w, x.ndim - 1)
    return np.ascontiguousarray(out)
