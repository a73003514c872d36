"""Turn calibration items into model inputs at a profile's sizes, with the model's own preprocessing.

Preprocessing comes from the model's metadata (``ModelInfo``): uint8 images are scaled to [0, 1], then
``(x - mean) / std`` per channel; float arrays are taken as preprocessed. Every sample is resized
(bilinear, half-pixel centers, like torch's ``align_corners=False``) to sizes inside the profile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mrdeploy.errors import CalibrationError
from mrdeploy.runtime.images import to_unit
from mrdeploy.runtime.modelinfo import InputInfo
from mrdeploy.runtime.profiles import InputRange, Profile
from mrdeploy.runtime.resize import resize_bilinear

SIZE_MODES = ("spread", "opt", "random")


def to_chw(a: np.ndarray, info: InputInfo, where: str = "sample") -> tuple[np.ndarray, bool]:
    """(CHW float32 array, needs_normalization) from an item array."""
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise CalibrationError(f"{where}: expected an image (H, W, C) or (C, H, W), got shape {a.shape}")
    c = info.channels
    if a.dtype in (np.uint8, np.uint16):  # images (uint16: 16-bit and float files, see runtime.images)
        if not (a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4)):
            a = a.transpose(2, 0, 1)  # HWC (Pillow's layout) unless it is clearly CHW
        if a.shape[0] == 4 and c == 3:
            a = a[:3]
        if a.shape[0] == 1 and c == 3:
            a = np.repeat(a, 3, axis=0)
        out, raw = to_unit(a, where), True
    elif np.issubdtype(a.dtype, np.floating):
        out, raw = a.astype(np.float32), False
    else:
        raise CalibrationError(f"{where}: expected uint8/uint16 images or float32 preprocessed input, got dtype {a.dtype}")
    if out.shape[0] != c:
        raise CalibrationError(f"{where}: input {info.name!r} takes {c} channels, got an array of shape {a.shape}")
    if not np.isfinite(out).all():
        raise CalibrationError(f"{where}: contains NaN or Inf")
    return out, raw


def prepare(item: Mapping, info: InputInfo, size: tuple[int, int], where: str = "sample") -> np.ndarray:
    """One item -> the model input (C, H, W) for ``info`` at ``size``: resized, then normalized."""
    a = item.get(info.name, item.get(None)) if isinstance(item, Mapping) else item
    if a is None:
        raise CalibrationError(f"{where}: has arrays for {sorted(map(str, item))}, not for input {info.name!r}")
    x, raw = to_chw(a, info, where)
    x = resize_bilinear(x.astype(np.float32, copy=False), size)
    if raw:
        if info.mean is not None:
            x = x - np.asarray(info.mean, dtype=np.float32)[:, None, None]
        if info.std is not None:
            x = x / np.asarray(info.std, dtype=np.float32)[:, None, None]
    return x.astype(np.float32, copy=False)


def _grid(lo: int, hi: int, divisor: int) -> list[int]:
    start = -(-lo // divisor) * divisor
    values = list(range(start, hi + 1, divisor))
    return values or [lo]


def profile_sizes(
    profile: Profile,
    n: int,
    mode: str = "spread",
    seed: int = 0,
    divisors: Mapping[str, int] | None = None,
) -> list[dict[str, tuple[int, int]]]:
    """Sizes for ``n`` samples inside ``profile``, one (H, W) per input per sample.

    ``spread``: opt, min, max, then seeded random sizes on the divisor grid; ``opt``: all at opt (how
    calibrating at a single size works); ``random``: seeded random sizes only.
    """
    if mode not in SIZE_MODES:
        raise CalibrationError(f"calibration size mode {mode!r}: expected one of {', '.join(SIZE_MODES)}")
    rng = np.random.default_rng(seed)
    out = []

    def pick(r: InputRange, i: int, div: int) -> tuple[int, int]:
        fixed = {"opt": r.opt, "min": r.min, "max": r.max}
        if mode == "opt" or r.is_static:
            return tuple(r.opt[-2:])
        if mode == "spread" and i < 3:
            return tuple(fixed[("opt", "min", "max")[i]][-2:])
        hs, ws = _grid(r.min[-2], r.max[-2], div), _grid(r.min[-1], r.max[-1], div)
        return int(rng.choice(hs)), int(rng.choice(ws))

    for i in range(n):
        out.append({name: pick(r, i, (divisors or {}).get(name, 1)) for name, r in profile.inputs.items()})
    return out


def eval_sizes(profile: Profile) -> list[dict[str, tuple[int, int]]]:
    """The sizes held-out samples are scored at: the profile's min, opt and max (once each if equal)."""
    seen, out = set(), []
    for which in ("min", "opt", "max"):
        sizes = {name: tuple(getattr(r, which)[-2:]) for name, r in profile.inputs.items()}
        key = tuple(sorted(sizes.items()))
        if key not in seen:
            seen.add(key)
            out.append(sizes)
    return out


def heldout_feeds(items: Sequence, inputs: Sequence[InputInfo], profile: Profile) -> list[dict[str, np.ndarray]]:
    """Held-out feeds: every item at each of :func:`eval_sizes`, as is and mirrored left-right. A mirrored
    photo is another photo to the model (its margins and errors differ), so the budget's drop is measured
    on twice the (sample, size) pairs, at the cost of running them."""
    out = []
    for k, item in enumerate(items):
        for size in eval_sizes(profile):
            feed = {i.name: prepare(item, i, size[i.name], f"held-out sample {k}") for i in inputs}
            out += [feed, {n: np.ascontiguousarray(a[..., ::-1]) for n, a in feed.items()}]
    return out


def group_by_shape(feeds: Sequence[dict[str, np.ndarray]]) -> list[list[dict[str, np.ndarray]]]:
    """Group per-sample feeds by their shapes (histogram calibrators need one shape per run)."""
    groups: dict[tuple, list] = {}
    for f in feeds:
        groups.setdefault(tuple((k, v.shape) for k, v in sorted(f.items())), []).append(f)
    return list(groups.values())


def stack(feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Same-shape per-sample feeds (C, H, W) -> one batch feed (N, C, H, W)."""
    return {k: np.stack([f[k] for f in feeds]) for k in feeds[0]}


def batch_range(profile: Profile) -> tuple[int, int]:
    """The batch sizes every input of ``profile`` accepts."""
    return (max(r.min[0] for r in profile.inputs.values()), min(r.max[0] for r in profile.inputs.values()))


def chunks(
    group: Sequence[dict[str, np.ndarray]], batch: tuple[int, int] = (1, 1 << 30), size: int = 8
) -> list[tuple[dict[str, np.ndarray], int]]:
    """Same-shape feeds -> (batch feed, real items) with batch sizes inside ``batch`` (a model built for
    a fixed batch gets exactly that; a short last batch is padded by repeating its items)."""
    lo, hi = batch
    n = max(lo, min(size, hi))
    out = []
    for i in range(0, len(group), n):
        part = list(group[i:i + n])
        real = len(part)
        while len(part) < lo:
            part.append(part[len(part) % real])
        out.append((stack(part), real))
    return out
