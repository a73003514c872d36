"""Sizes and inputs for parity and bench at any resolution: labeled example data, a folder of images, or noise.

``EvalData(spec, model)``: ``spec`` is ``"digits"`` (held-out digits, labeled), ``"shapes"`` (held-out
generated scenes with masks), a directory of images (labeled when its subfolders are named after the
model's labels), or None (seeded standard-normal noise). ``data.batch({"input": (h, w)})`` returns the
feeds ``{name: (N, C, h, w) float32}`` and the labels (``(N,)`` classes, ``(N, h, w)`` masks, or None).

Sizes on the command line: ``96,128,200x160`` (one image input) or ``template:128+search:256`` (a size
per input, ``+`` between inputs, ``,`` between points; ``128/256`` in input order): see
:mod:`mrdeploy.runtime.sizes`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mrdeploy.errors import InputError, MrdeployError, OptionError
from mrdeploy.runtime.manifest import Manifest
from mrdeploy.runtime.modelinfo import ModelInfo
from mrdeploy.runtime.sizes import parse_hw, parse_size_item, parse_size_list, point_label, size_point

__all__ = ["EvalData", "SizePoint", "default_sizes", "examples_data", "parse_hw", "parse_sizes", "point_label",
           "point_side", "served_by"]

HW = tuple[int, int]
SizePoint = dict[str, HW]


def parse_sizes(text: str | Sequence, input_names: Sequence[str]) -> list[SizePoint]:
    """``"96,128,200x160"`` or a list of sides / (h, w) / dicts -> one SizePoint per item (the syntax:
    :mod:`mrdeploy.runtime.sizes`). With several inputs a single size is refused: give one per input."""
    items = parse_size_list(text) if isinstance(text, str) else list(text)
    if not items:
        raise InputError("sizes: expected at least one size (e.g. 96,128,200x160), got none")
    points = []
    for item in items:
        written = isinstance(text, str) or isinstance(item, str)
        if isinstance(item, str):
            item = parse_size_item(item)
        if written and len(input_names) > 1 and isinstance(item, tuple) and isinstance(item[0], int):
            shown = str(item[0]) if item[0] == item[1] else f"{item[0]}x{item[1]}"
            raise OptionError(
                f"size {shown!r}: the model has "
                f"{len(input_names)} image inputs ({', '.join(input_names)}); give one size per input, e.g. "
                + "+".join(f"{n}:128" for n in input_names)
            )
        points.append(size_point(item, input_names))
    return points


def point_side(point: Mapping[str, HW]) -> float:
    """One number for plots: sqrt(H*W) of the largest input (the side for square inputs)."""
    return max(float(np.sqrt(h * w)) for h, w in point.values())


def default_sizes(manifest: Manifest) -> list[SizePoint]:
    """Each profile's min, opt and max; between neighbouring profiles; one non-square size; one below
    and one above all profiles (inside the model's valid range). Sorted by area, no duplicates."""
    info = {i.name: i for i in manifest.model.inputs}
    names = list(manifest.profiles[0].profile.inputs)
    profiles = sorted(manifest.profile_list, key=lambda p: p.area("max"))
    points: list[SizePoint] = []

    def add(point: SizePoint) -> None:
        if point not in points:
            points.append(point)

    def snap(v: float, name: str) -> int:
        d = max(1, info[name].divisor if name in info else 1)
        return max(d, int(round(v / d)) * d)

    for p in profiles:
        for which in ("min", "opt", "max"):
            add({n: tuple(getattr(r, which)[-2:]) for n, r in p.inputs.items()})
    for a, b in zip(profiles, profiles[1:]):
        add({n: tuple(snap((a.inputs[n].max[k] + b.inputs[n].min[k]) / 2 if b.inputs[n].min[k] > a.inputs[n].max[k]
                           else (a.inputs[n].opt[k] + b.inputs[n].opt[k]) / 2, n) for k in (-2, -1)) for n in names})
    widest = max(profiles, key=lambda p: sum(r.max[-2] - r.min[-2] + r.max[-1] - r.min[-1] for r in p.inputs.values()))
    rect = {n: (r.min[-2], r.max[-1]) for n, r in widest.inputs.items()}
    if any(h != w for h, w in rect.values()):
        add(rect)
    lo, hi = profiles[0], profiles[-1]
    below, above = {}, {}
    for n in names:
        d = max(1, info[n].divisor if n in info else 1)
        vmin = info[n].min_size if n in info and info[n].min_size else (d, d)
        vmax = info[n].max_size if n in info and info[n].max_size else None
        step = max(d, 8 // d * d)
        below[n] = tuple(max(vmin[k], lo.inputs[n].min[-2 + k] - 2 * step) for k in (0, 1))
        above[n] = tuple(hi.inputs[n].max[-2 + k] + 2 * step for k in (0, 1))
        if vmax is not None:
            above[n] = tuple(min(vmax[k], above[n][k]) for k in (0, 1))
    for extra in (below, above):
        if not any(p.contains({n: (r.min[0], r.min[1], *extra[n]) for n, r in p.inputs.items()}) for p in profiles):
            add({n: tuple(int(v) for v in hw) for n, hw in extra.items()})
    return sorted(points, key=lambda pt: (sum(h * w for h, w in pt.values()), list(pt.values())))


def served_by(runner, point: SizePoint, policy: str) -> tuple[str | None, str]:
    """The Runner's choice at a size: (profile name, "exact" | "pad" | "resize"); (None, "error") when
    the policy refuses the size."""
    (h, w) = next(iter(point.values()))
    try:
        if len(point) == 1:
            d = runner.select(1, h, w, policy=policy)
        else:
            d = runner.select({n: (1, *hw) for n, hw in point.items()}, policy=policy)
    except MrdeployError:
        return None, "error"
    name = getattr(d, "profile", None) or getattr(d, "name", None)
    name = getattr(name, "name", name)
    return name, getattr(d, "action", "exact")


def examples_data():
    """The repository's ``examples/data.py`` (digits, shapes); it lives beside the package in a checkout."""
    try:
        import examples.data as data
    except ImportError:
        root = Path(__file__).resolve().parents[1]
        if not (root / "examples" / "data.py").is_file():
            raise InputError(
                "data 'digits'/'shapes' needs the repository's examples/data.py (a source checkout of mrdeploy); "
                "give --data DIR with images instead"
            ) from None
        sys.path.insert(0, str(root))
        import examples.data as data
    return data


class EvalData:
    """Batches of inputs at any size for one model."""

    def __init__(self, spec: str | os.PathLike | None, model: ModelInfo, samples: int = 32, seed: int = 0):
        self.model = model
        self.samples = int(samples)
        self.seed = int(seed)
        self.input_names = [i.name for i in model.inputs]
        if self.samples < 1:
            raise InputError(f"samples: expected at least 1, got {samples}")
        if spec is None or str(spec) in ("", "random"):
            self.kind, self.name, self.labeled = "random", "random (seeded normal noise)", False
            return
        spec = str(spec)
        if spec in ("digits", "shapes"):
            want = "classification" if spec == "digits" else "segmentation"
            if model.task != want or len(self.input_names) != 1:
                raise InputError(
                    f"data {spec!r} is for a {want} model with one image input, got a {model.task} model "
                    f"with inputs {self.input_names}"
                )
            classes = 10 if spec == "digits" else 4
            if model.labels is not None and len(model.labels) != classes:
                raise InputError(
                    f"data {spec!r} has {classes} classes, the model has {len(model.labels)} labels "
                    f"({', '.join(model.labels[:6])}{', ...' if len(model.labels) > 6 else ''})"
                )
            if model.inputs[0].channels != 3:
                raise InputError(f"data {spec!r} is RGB (3 channels), the model's input has {model.inputs[0].channels}")
            self.kind, self.labeled = spec, True
            self.name = "digits (held-out, labeled)" if spec == "digits" else "shapes (held-out scenes, masks)"
            self._data = examples_data()
            if spec == "digits":
                images, labels = self._data.digits("heldout")
                self._digits = (images[: self.samples], labels[: self.samples])
            return
        path = Path(spec)
        if not path.is_dir():
            raise InputError(f"data {spec!r}: expected 'digits', 'shapes' or a directory of images, got neither")
        if len(self.input_names) != 1:
            raise InputError(f"data DIR needs a model with one image input, got inputs {self.input_names}")
        self._load_dir(path)

    def _load_dir(self, path: Path) -> None:
        from mrdeploy.runtime.images import IMAGE_SUFFIXES, image_files, read_image, to_unit

        files = image_files(path)
        if not files:
            raise InputError(f"data {path}: expected image files ({', '.join(sorted(IMAGE_SUFFIXES))}), found none")
        images, labels, bad = [], [], 0
        names = list(self.model.labels or [])
        channels = self.model.inputs[0].channels
        for f in files:
            if len(images) >= self.samples:
                break
            try:  # the runtime's decoding (type range, EXIF orientation) -> 1xCxHxW in [0, 1]
                images.append(to_unit(read_image(f, channels)).transpose(2, 0, 1)[None])
            except InputError:
                bad += 1
                continue
            parent = f.parent.name
            labels.append(names.index(parent) if parent in names else -1)
        if not images:
            raise InputError(f"data {path}: none of the {len(files)} image files could be read by Pillow")
        self.kind = "dir"
        self._images = images
        self.labeled = self.model.task == "classification" and all(label >= 0 for label in labels)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.name = f"{path} ({len(images)} images{', labeled by folder' if self.labeled else ''}" + (
            f", {bad} unreadable skipped)" if bad else ")"
        )

    def batch(self, point: Mapping[str, HW]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Feeds at ``point`` and the labels (None when unlabeled)."""
        info = {i.name: i for i in self.model.inputs}
        if self.kind == "random":
            rng = np.random.default_rng(self.seed)
            feeds = {}
            for name in self.input_names:
                h, w = point[name]
                c = info[name].channels
                feeds[name] = rng.standard_normal((self.samples, c, h, w), dtype=np.float32)
            return feeds, None
        name = self.input_names[0]
        h, w = point[name]
        mean, std = info[name].mean, info[name].std
        if self.kind == "digits":
            images, y = self._digits
            return {name: self._data.digits_at(images, (h, w), mean, std)}, y
        if self.kind == "shapes":
            x, y = self._data.shapes_batch(self.samples, (h, w), seed=self._data.HELDOUT_SHAPES_SEED, mean=mean, std=std)
            return {name: x}, y
        from mrdeploy.runtime.resize import resize_bilinear

        x = np.concatenate([resize_bilinear(im, (h, w)) for im in self._images])
        if mean is not None:
            x = x - np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        if std is not None:
            x = x / np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
        return {name: x.astype(np.float32)}, (self._labels if self.labeled else None)
