"""How each spatial output's size follows an input, inferred at export by running the model at a few
sizes: ``out = floor((in + offset) * scale)`` per axis (see OutputInfo), and which input it follows.

The runtime crops (or resizes) a padded output back to exactly the size PyTorch gives at the input's
own size with this rule, also for outputs larger than the input (super-resolution) and for heads that
floor (a kernel=stride patch embedding) where others round up (a "same"-padded strided conv).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from fractions import Fraction

from mrdeploy.runtime.modelinfo import OutputInfo

MAX_DENOMINATOR = 64  # scales down to 1/64 and up to 64x


def _forward_hw(torch_model, tensors: Mapping, name: str, hw: tuple[int, int], seed: int):
    """Output (H, W) of every rank>=3 output with input ``name`` at ``hw`` (others as in the example);
    None when the model refuses that size."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    args = []
    for n, t in tensors.items():
        if n == name:
            t = torch.randn((1, t.shape[1], *hw), generator=gen)
        else:
            t = t[:1]
        args.append(t)
    try:
        with torch.no_grad():
            out = torch_model(*args)
    except Exception:
        return None
    outs = [out] if isinstance(out, torch.Tensor) else list(out.values() if isinstance(out, Mapping) else out)
    return [tuple(o.shape[-2:]) if o.ndim >= 3 else None for o in outs]


def _probe_sizes(h: int, w: int, d: int, lo, hi) -> list[tuple[int, int]]:
    """Sizes to probe around the example (h, w) inside [lo, hi]: on the divisor grid at other scales
    (the scale), and off it by a few pixels (floor vs round-up; a model that refuses them is skipped)."""

    def ok(hw):
        return (min(hw) >= 1 and (lo is None or (hw[0] >= lo[0] and hw[1] >= lo[1]))
                and (hi is None or (hw[0] <= hi[0] and hw[1] <= hi[1])))

    def on_grid(v: float) -> int:
        return max(d, round(v / d) * d)

    grid = [(on_grid(h * fh), on_grid(w * fw)) for fh, fw in ((2.0, 1.5), (0.5, 0.75), (1.5, 1.25), (0.75, 2.0))]
    grid = [g for g in grid if ok(g)][:3]
    # one below and one above a multiple of 64: residues -1 and +1 modulo every power-of-two stride,
    # which tell floor (kernel = stride) from round-up ("same" padding) and other offsets
    bh, bw = max(64, round(h / 64) * 64), max(64, round(w / 64) * 64)
    off = [(bh - 1, bw + 1), (bh + 1, bw - 1), (h - 1, w + 1), (h + 1, w - 1), (h + 9, w + 13)]
    off = list(dict.fromkeys(g for g in off if ok(g) and g not in grid and g != (h, w)))
    return grid + off[:3]


def _fit_axis(points: list[tuple[int, int]]) -> tuple[float, int] | None:
    """(scale, offset) with floor((i + offset) * scale) == o at every (i, o); the largest fitting
    offset when several do (off the probed sizes the output then covers every input pixel)."""
    pts = sorted(set(points))
    if len(pts) < 2 or pts[0][0] == pts[-1][0]:
        return None
    (i0, o0), (i1, o1) = pts[0], pts[-1]
    ratio = (o1 - o0) / (i1 - i0)
    if ratio <= 0:
        return None
    powers = {Fraction(2) ** e for e in range(-6, 4)}  # 1/64 .. 8: strides and upscales first
    others = ({Fraction(1, k) for k in range(1, MAX_DENOMINATOR + 1)} | {Fraction(k) for k in range(2, 9)}
              | {Fraction(ratio).limit_denominator(MAX_DENOMINATOR)}) - powers
    by_closeness = lambda c: abs(float(c) - ratio)  # noqa: E731
    for scale in sorted(powers, key=by_closeness) + sorted(others, key=by_closeness):
        span = math.ceil(1 / scale) if scale < 1 else 1
        fits = [
            off for off in range(-2 * span, 2 * span + 1)
            if all(math.floor((i + off) * scale) == o for i, o in pts)
        ]
        if fits:
            return float(scale), max(fits)
    return None


def infer_rules(torch_model, tensors: Mapping, refs, infos: list[OutputInfo], divisor: Mapping[str, int],
                min_size: Mapping, max_size: Mapping, seed: int = 0) -> tuple[list[OutputInfo], list[str]]:
    """Fill ``scale``/``offset``/``source`` (and ``stride``) of every spatial output whose scale was
    not given. Returns the new infos and notes for outputs whose rule could not be inferred."""
    todo = [k for k, o in enumerate(infos) if o.spatial and o.scale is None]
    if not todo:
        return infos, []
    base = {n: tuple(t.shape[-2:]) for n, t in tensors.items()}
    points: dict[tuple[int, str], list] = {}  # (output index, input) -> [((ih, iw), (oh, ow))]
    source: dict[int, str] = {}
    for name, (h, w) in base.items():
        for k in todo:
            points[(k, name)] = [((h, w), tuple(refs[k].shape[-2:]))]
        for hw in _probe_sizes(h, w, divisor[name], min_size[name], max_size[name]):
            got = _forward_hw(torch_model, tensors, name, hw, seed)
            if got is None:
                continue
            for k in todo:
                if got[k] is None:
                    continue
                points[(k, name)].append((hw, got[k]))
                if got[k] != tuple(refs[k].shape[-2:]) and k not in source:
                    source[k] = name
    out, notes = list(infos), []
    first = next(iter(base))
    for k in todo:
        name = source.get(k, first)
        pts = points[(k, name)]
        fit_h = _fit_axis([(i[0], o[0]) for i, o in pts])
        fit_w = _fit_axis([(i[1], o[1]) for i, o in pts])
        if fit_h is None or fit_w is None:
            notes.append(
                f"output {infos[k].name!r}: no rule out = floor((in + offset) * scale) fits its sizes at "
                f"{[f'{i[0]}x{i[1]}->{o[0]}x{o[1]}' for i, o in pts]}; crop-back uses stride {infos[k].stride}"
            )
            continue
        scale = (fit_h[0], fit_w[0])
        stride = max(1, round(1 / min(scale))) if min(scale) < 1 else 1
        out[k] = replace(infos[k], scale=scale, offset=(fit_h[1], fit_w[1]), source=name, stride=stride)
    return out, notes


def parse_scale(value) -> tuple[float, float]:
    """A given scale: 2, 0.25, "1/16", (sh, sw)."""
    if isinstance(value, tuple | list):
        h, w = value
        return (float(Fraction(str(h))), float(Fraction(str(w))))
    v = float(Fraction(str(value)))
    return (v, v)
