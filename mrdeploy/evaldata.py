"""Inputs for parity and bench at any resolution: labeled example data, a folder of images, or noise.

``EvalData(spec, model)``: ``spec`` is ``"digits"`` (held-out digits, labeled), ``"shapes"`` (held-out
generated scenes with masks), a directory of images (labeled when its subfolders are named after the
model's labels), or None (seeded standard-normal noise). ``data.batch({"input": (h, w)})`` returns the
feeds ``{name: (N, C, h, w) float32}`` and the labels (``(N,)`` classes, ``(N, h, w)`` masks, or None).

Sizes on the command line: ``96,128,200x160`` (one image input) or ``template:128+search:256`` (a size
per input, ``+`` between inputs, ``,`` between points).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mrdeploy.errors import InputError
from mrdeploy.runtime.modelinfo import ModelInfo

HW = tuple[int, int]
SizePoint = dict[str, HW]


def parse_hw(text: str) -> HW:
    text = text.strip().lower()
    try:
        if "x" in text:
            h, w = text.split("x", 1)
            hw = (int(h), int(w))
        else:
            hw = (int(text), int(text))
    except ValueError:
        raise InputError(f"size {text!r} does not parse: expected SIDE or HxW (e.g. 128 or 200x160)") from None
    if hw[0] <= 0 or hw[1] <= 0:
        raise InputError(f"size {text!r}: expected positive sides, got {hw[0]}x{hw[1]}")
    return hw


def parse_sizes(text: str | Sequence, input_names: Sequence[str]) -> list[SizePoint]:
    """``"96,128,200x160"`` or a list of sides / (h, w) / dicts -> one SizePoint per item."""
    items = [t for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    if not items:
        raise InputError("sizes: expected at least one size (e.g. 96,128,200x160), got none")
    points = []
    for item in items:
        if isinstance(item, Mapping):
            point = {k: tuple(int(v) for v in (hw if not isinstance(hw, int) else (hw, hw))) for k, hw in item.items()}
        elif isinstance(item, (int, np.integer)):
            point = {n: (int(item), int(item)) for n in input_names}
        elif isinstance(item, (tuple, list)):
            point = {n: (int(item[0]), int(item[1])) for n in input_names}
        elif "+" in str(item) or ":" in str(item):
            point = {}
            for part in str(item).split("+"):
                name, _, hw = part.partition(":")
                point[name.strip()] = parse_hw(hw)
        else:
            if len(input_names) > 1:
                raise InputError(
                    f"size {str(item).strip()!r}: the model has {len(input_names)} image inputs "
                    f"({', '.join(input_names)}); give one size per input, e.g. "
                    + "+".join(f"{n}:128" for n in input_names)
                )
            point = {n: parse_hw(str(item)) for n in input_names}
        if sorted(point) != sorted(input_names):
            raise InputError(f"size {item!r}: expected a size for inputs {list(input_names)}, got {list(point)}")
        points.append({n: point[n] for n in input_names})
    return points


def point_label(point: Mapping[str, HW]) -> str:
    """``{"input": (128, 96)}`` -> ``"128x96"``; several inputs -> ``"template:128x128+search:256x256"``."""
    if len(point) == 1:
        h, w = next(iter(point.values()))
        return f"{h}x{w}"
    return "+".join(f"{n}:{h}x{w}" for n, (h, w) in point.items())


def point_side(point: Mapping[str, HW]) -> float:
    """One number for plots: sqrt(H*W) of the largest input (the side for square inputs)."""
    return max(float(np.sqrt(h * w)) for h, w in point.values())


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
