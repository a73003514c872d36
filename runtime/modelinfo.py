"""What a deployed model needs to be fed and read: inputs, outputs, task, labels.

Written by the exporter into the ONNX model's ``metadata_props`` (keys ``mrdeploy.*``), copied by the
builder into the bundle manifest, read by the runtime. Pure Python.

Normalization convention: pixels are scaled to [0, 1], then ``(x - mean) / std`` per channel.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

METADATA_PREFIX = "mrdeploy."
TASKS = ("classification", "segmentation", "dense")


@dataclass
class InputInfo:
    name: str
    channels: int = 3
    layout: str = "NCHW"
    dtype: str = "float32"
    divisor: int = 1
    min_size: tuple[int, int] | None = None  # (H, W) the model is valid from
    max_size: tuple[int, int] | None = None  # (H, W) the model is valid up to
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, d: Mapping) -> InputInfo:
        d = dict(d)
        for key in ("min_size", "max_size", "mean", "std"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class OutputInfo:
    """One model output. A spatial output's size follows one input (``source``) by the rule
    ``out = floor((in + offset) * scale)`` per axis: ``scale`` 2 for a 2x super-resolution output, 1
    for a same-size dense output, 1/16 for a stride-16 head; ``offset`` 0 floors like a kernel=stride
    conv, ``1/scale - 1`` rounds up like a "same"-padded strided conv. Without ``scale`` (older
    models): ``out = ceil(in / stride)``."""

    name: str
    spatial: bool = False  # H, W are the last two axes and follow the input's
    stride: int = 1  # input pixels per output pixel, for spatial outputs
    scale: tuple[float, float] | None = None  # output pixels per input pixel (H, W)
    offset: tuple[int, int] = (0, 0)  # added to the input size before scaling (H, W)
    source: str | None = None  # the input whose size this output follows (None: the first)

    @classmethod
    def from_dict(cls, d: Mapping) -> OutputInfo:
        d = dict(d)
        if d.get("scale") is not None:
            d["scale"] = tuple(float(v) for v in d["scale"])
        if d.get("offset") is not None:
            d["offset"] = tuple(int(v) for v in d["offset"])
        return cls(**d)

    def size_at(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) this spatial output has when its source input is ``in_hw``."""
        if self.scale is None:
            st = max(1, int(self.stride or 1))
            return (-(-int(in_hw[0]) // st), -(-int(in_hw[1]) // st))
        return tuple(  # type: ignore[return-value]
            max(1, math.floor((int(i) + o) * s + 1e-6)) for i, o, s in zip(in_hw, self.offset, self.scale)
        )


@dataclass
class ModelInfo:
    name: str = "model"
    task: str = "classification"
    inputs: list[InputInfo] = field(default_factory=list)
    outputs: list[OutputInfo] = field(default_factory=list)
    labels: list[str] | None = None

    def input(self, name: str) -> InputInfo:
        for i in self.inputs:
            if i.name == name:
                return i
        raise KeyError(name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelInfo:
        return cls(
            name=d.get("name", "model"),
            task=d.get("task", "classification"),
            inputs=[InputInfo.from_dict(i) for i in d.get("inputs", [])],
            outputs=[OutputInfo.from_dict(o) for o in d.get("outputs", [])],
            labels=list(d["labels"]) if d.get("labels") is not None else None,
        )

    def to_metadata_props(self) -> dict[str, str]:
        """Key/value strings for ONNX ``metadata_props``."""
        d = self.to_dict()
        return {METADATA_PREFIX + k: json.dumps(v) for k, v in d.items()}

    @classmethod
    def from_metadata_props(cls, props: Mapping[str, str]) -> ModelInfo | None:
        """Inverse of to_metadata_props; None when the model carries no mrdeploy metadata."""
        d = {k[len(METADATA_PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(METADATA_PREFIX)}
        if not d:
            return None
        return cls.from_dict(d)
