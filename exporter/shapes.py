"""Example shapes and size lists: parsing and checking against divisor / min / max."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from mrdeploy.errors import ExportError
from mrdeploy.runtime.sizes import parse_hw, parse_size_list

Shape = tuple[int, ...]
_SHAPE = re.compile(r"^\d+(x\d+)*$")


def parse_shape(text: str) -> Shape:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``."""
    t = str(text).strip().lower().replace("*", "x").replace(",", "x")
    if not _SHAPE.match(t):
        raise ExportError(f"input shape {text!r} does not parse: expected NxCxHxW, e.g. 1x3x224x224")
    shape = tuple(int(v) for v in t.split("x"))
    if len(shape) != 4 or min(shape) < 1:
        raise ExportError(f"input shape {text!r}: expected 4 positive dims NxCxHxW, got {len(shape)} dims")
    return shape


def parse_input_shapes(items: Sequence[str]) -> Shape | dict[str, Shape]:
    """CLI ``--input-shape`` values: one ``1x3x224x224`` or several ``name=1x3x128x128``."""
    if len(items) == 1 and "=" not in items[0]:
        return parse_shape(items[0])
    shapes: dict[str, Shape] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ExportError(
                f"input shape {item!r} does not parse: with several inputs give name=NxCxHxW, "
                "e.g. template=1x3x128x128"
            )
        if name in shapes:
            raise ExportError(f"input shape for {name!r} given twice")
        shapes[name] = parse_shape(text)
    return shapes


def parse_size(text: str) -> tuple[int, int]:
    """``"160"`` -> (160, 160); ``"384x256"`` -> (384, 256) (H x W): :func:`mrdeploy.runtime.sizes.parse_hw`."""
    return parse_hw(text)


def parse_sizes(text: str) -> list:
    """``"96,160,384x256"`` -> [(96, 96), (160, 160), (384, 256)]; an item ``"112/224x320"`` gives one
    size per input, in input order: ((112, 112), (224, 320)); ``"a:112+b:224x320"`` one per named input.
    The one size-list syntax: :mod:`mrdeploy.runtime.sizes`."""
    return parse_size_list(text)


def as_hw(value: Any, what: str) -> tuple[int, int] | None:
    """None, an int, "HxW" or an (H, W) pair -> (H, W) or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_size(value)
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ExportError(f"{what} {value!r}: expected an int, 'HxW' or an (H, W) pair")


def per_input(value: Any, names: Sequence[str], what: str) -> dict[str, Any]:
    """A setting given once for all inputs, or as a dict input name -> value."""
    if isinstance(value, Mapping):
        unknown = set(value) - set(names)
        if unknown:
            raise ExportError(f"{what} names unknown input(s) {sorted(unknown)}; the inputs are {list(names)}")
        return {n: value.get(n) for n in names}
    return {n: value for n in names}


def normalize_example(example_shape: Any, default_name: str = "input") -> dict[str, Shape]:
    """A shape, a shape string, or a dict of them -> {input name: NCHW shape}."""
    if isinstance(example_shape, Mapping):
        if not example_shape:
            raise ExportError("example shape dict is empty: expected {input name: NxCxHxW}")
        out = {}
        for name, shape in example_shape.items():
            out[str(name)] = normalize_example(shape)["input"]
        return out
    if isinstance(example_shape, str):
        return {default_name: parse_shape(example_shape)}
    try:
        shape = tuple(int(v) for v in example_shape)
    except (TypeError, ValueError) as e:
        raise ExportError(f"example shape {example_shape!r}: expected NxCxHxW ints") from e
    if len(shape) != 4 or min(shape) < 1:
        raise ExportError(f"example shape {example_shape!r}: expected 4 positive dims NxCxHxW")
    return {default_name: shape}


def check_size(name: str, hw: tuple[int, int], divisor: int, lo, hi, what: str) -> None:
    """``hw`` must be a multiple of ``divisor`` and inside [lo, hi] (each (H, W) or None)."""
    h, w = hw
    if h % divisor or w % divisor:
        raise ExportError(
            f"{what} {h}x{w} of input {name!r} is not a multiple of the divisor {divisor} "
            f"(nearest valid: {round_to(h, divisor)}x{round_to(w, divisor)})"
        )
    if lo is not None and (h < lo[0] or w < lo[1]):
        raise ExportError(f"{what} {h}x{w} of input {name!r} is below the min size {lo[0]}x{lo[1]}")
    if hi is not None and (h > hi[0] or w > hi[1]):
        raise ExportError(f"{what} {h}x{w} of input {name!r} is above the max size {hi[0]}x{hi[1]}")


def round_to(value: float, divisor: int) -> int:
    """Nearest positive multiple of ``divisor``."""
    return max(divisor, int(round(value / divisor)) * divisor)


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)
