"""Fit inputs to the profile a Decision chose, and bring spatial outputs back to the input's geometry.

- ``pad``: bottom/right padding with zeros (the mean colour, after normalization), ``reflect`` or
  ``edge`` (the bundle's ``pad_mode``); spatial outputs are cropped to exactly the size the model gives
  at the input's own size (OutputInfo.size_at: floor or round-up, any scale, also 2x outputs).
- ``resize``: bilinear resize to the profile's opt; spatial outputs resized back to that size.
- ``letterbox``: resize keeping the aspect ratio to fit the opt, pad the rest; spatial outputs are
  cropped to the resized content, then resized to that size.

numpy only.
"""

from __future__ import annotations

import numpy as np

from mrdeploy.runtime.dispatch import Decision
from mrdeploy.runtime.modelinfo import OutputInfo
from mrdeploy.runtime.resize import resize_bilinear

PAD_MODES = ("zero", "reflect", "edge")


def pad_to(a: np.ndarray, shape, mode: str = "zero") -> np.ndarray:
    """Pad NCHW ``a`` at the bottom/right to ``shape``."""
    ph, pw = shape[-2] - a.shape[-2], shape[-1] - a.shape[-1]
    if ph == 0 and pw == 0:
        return a
    if mode == "zero":
        out = np.zeros(tuple(shape), dtype=a.dtype)
        out[:, :, : a.shape[2], : a.shape[3]] = a
        return out
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode {mode!r}: expected one of {', '.join(PAD_MODES)}")
    widths = ((0, 0), (0, 0), (0, ph), (0, pw))
    if mode == "reflect" and (ph >= a.shape[-2] or pw >= a.shape[-1]):
        return np.pad(a, widths, mode="symmetric")  # reflect needs pad < size; symmetric repeats further
    return np.pad(a, widths, mode=mode)


def fit_inputs(arrays: dict[str, np.ndarray], d: Decision, pad_mode: str = "zero") -> dict[str, np.ndarray]:
    if d.action == "exact":
        return arrays
    out = {}
    for name, a in arrays.items():
        served = d.served_shapes[name]
        if served == a.shape:
            out[name] = a
        elif d.action == "resize":
            out[name] = resize_bilinear(a, served[-2:])
        elif d.action == "letterbox":
            content = d.content_shapes[name]
            inner = a if content == a.shape else resize_bilinear(a, content[-2:])
            out[name] = pad_to(inner.astype(a.dtype, copy=False), served, pad_mode)
        else:
            out[name] = pad_to(a, served, pad_mode)
    return out


def source_input(info: OutputInfo, out_hw, d: Decision, input_names: list[str]) -> str:
    """Which input a spatial output follows: the recorded source, else the one whose served size gives
    the output's size (older bundles)."""
    if info.source in d.served_shapes:
        return info.source
    for name, s in d.served_shapes.items():
        if tuple(info.size_at(s[-2:])) == tuple(out_hw):
            return name
    return input_names[0]


def restore_outputs(outs: dict[str, np.ndarray], d: Decision, infos: dict[str, OutputInfo],
                    input_names: list[str]) -> dict[str, np.ndarray]:
    if d.action == "exact":
        return outs
    result = {}
    for oname, y in outs.items():
        info = infos.get(oname)
        if info is None or not info.spatial or y.ndim < 3:
            result[oname] = y
            continue
        src = source_input(info, y.shape[-2:], d, input_names)
        in_hw = tuple(d.input_shapes[src][-2:])
        if in_hw == tuple(d.served_shapes[src][-2:]):
            result[oname] = y
            continue
        target = info.size_at(in_hw)
        if d.action == "pad":
            result[oname] = np.ascontiguousarray(y[..., : target[0], : target[1]])
            continue
        if d.action == "letterbox":
            ch, cw = info.size_at(tuple(d.content_shapes[src][-2:]))
            y = y[..., : min(ch, y.shape[-2]), : min(cw, y.shape[-1])]
        result[oname] = resize_bilinear(y, target).astype(y.dtype, copy=False)
    return result
