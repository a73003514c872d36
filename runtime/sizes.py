"""The one syntax for sizes on the command line and in keyword arguments (pure Python).

A size is ``SIDE`` or ``HxW`` (``128``, ``200x160``). A size list is items separated by ``,``; with
several image inputs an item gives one size per input, either named (``template:128+search:256x320``,
``+`` between inputs, the form reports print) or in input order (``128/256x320``). Used by
``export --validate-sizes``, ``parity --sizes`` and ``bench --sizes``; a ``--profile`` spec, which
has ranges, is parsed by :mod:`mrdeploy.runtime.profiles`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from numbers import Integral

from mrdeploy.errors import OptionError

HW = tuple[int, int]
SizeItem = HW | tuple[HW, ...] | dict[str, HW]
_HW = re.compile(r"(\d+)\s*(?:x\s*(\d+))?")


def parse_hw(text: str) -> HW:
    """``"160"`` -> (160, 160); ``"384x256"`` -> (384, 256) (H x W)."""
    t = str(text).strip().lower()
    m = _HW.fullmatch(t)
    if not m:
        raise OptionError(f"size {t!r} does not parse: expected SIDE or HxW (e.g. 128 or 200x160)")
    hw = (int(m.group(1)), int(m.group(2) or m.group(1)))
    if hw[0] <= 0 or hw[1] <= 0:
        raise OptionError(f"size {t!r}: expected positive sides, got {hw[0]}x{hw[1]}")
    return hw


def parse_size_item(text: str) -> SizeItem:
    """One item of a size list: an HW, a tuple of HWs (``A/B``, input order) or {input: HW} (``a:A+b:B``)."""
    t = str(text).strip()
    if "+" in t or ":" in t:
        point: dict[str, HW] = {}
        for part in t.split("+"):
            name, sep, hw = part.partition(":")
            if not sep or not name.strip():
                raise OptionError(f"size {t!r} does not parse: expected NAME:SIZE per input, e.g. template:128+search:256")
            point[name.strip()] = parse_hw(hw)
        return point
    if "/" in t:
        return tuple(parse_hw(q) for q in t.split("/"))
    return parse_hw(t)


def parse_size_list(text: str) -> list[SizeItem]:
    """``"96,160,384x256"`` -> [(96, 96), (160, 160), (384, 256)]; see the module for several inputs."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise OptionError(f"sizes: expected at least one size (e.g. 96,128,200x160), got {str(text)!r}")
    return [parse_size_item(p) for p in parts]


def _hw(value) -> HW:
    """A side, "HxW" or an (H, W) pair -> (H, W)."""
    if isinstance(value, str):
        return parse_hw(value)
    if isinstance(value, Integral) and not isinstance(value, bool):
        return (int(value), int(value))
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, Integral) for v in value):
        return (int(value[0]), int(value[1]))
    raise OptionError(f"size {value!r}: expected a side, 'HxW' or an (H, W) pair")


def size_point(item, input_names: Sequence[str]) -> dict[str, HW]:
    """One size-list item (parsed or not: a string, a side, an (H, W) pair, a tuple of sizes in input
    order, or a dict) -> {input name: (H, W)} for every input, in input order. A single size applies to
    every input."""
    names = list(input_names)
    if isinstance(item, str):
        item = parse_size_item(item)
    if isinstance(item, Mapping):
        point = {str(k): _hw(v) for k, v in item.items()}
    elif isinstance(item, Integral) or (isinstance(item, Sequence) and len(item) == 2
                                         and all(isinstance(v, Integral) for v in item)):
        point = dict.fromkeys(names, _hw(item))
    elif isinstance(item, Sequence) and len(item) == len(names):
        point = {n: _hw(v) for n, v in zip(names, item)}
    else:
        raise OptionError(f"size {item!r}: expected HxW or one HxW per input ({len(names)}: {names})")
    if sorted(point) != sorted(names):
        raise OptionError(f"size {item!r}: expected a size for inputs {names}, got {list(point)}")
    return {n: point[n] for n in names}


def point_label(point: Mapping[str, HW]) -> str:
    """``{"input": (128, 96)}`` -> ``"128x96"``; several inputs -> ``"template:128x128+search:256x256"``."""
    if len(point) == 1:
        h, w = next(iter(point.values()))
        return f"{h}x{w}"
    return "+".join(f"{n}:{h}x{w}" for n, (h, w) in point.items())
