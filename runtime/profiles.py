"""Resolution profiles: min/opt/max shapes per image input, as in a TensorRT optimization profile.

Pure Python (no numpy, no onnx): the builders, the calibrator and the runtime all share it.

Text forms (``--profile``):

- ``224``                       static square 224x224
- ``256x192``                   static H x W
- ``96-160@128``                square sides 96..160, optimized for 128 (``96-160`` alone: opt is the midpoint)
- ``192x256-384x512@288x384``   a range per side
- ``small=96-160@128``          named
- ``small=template:112-128@128,search:224-384@256``   several image inputs, one spec each

Selection follows Triton's rule: keep the profiles whose range contains every input, then take the
one whose opt is nearest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mrdeploy.errors import ProfileError

HW = tuple[int, int]
Shape = tuple[int, ...]

_SIDE = r"(\d+)(?:x(\d+))?"
_SPEC = re.compile(rf"^{_SIDE}(?:-{_SIDE})?(?:@{_SIDE})?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class SpatialSpec:
    """The spatial part of a profile for one input, before batch and channels are known."""

    min: HW
    max: HW
    opt: HW | None = None  # None: the midpoint, snapped to the divisor when the profile is made

    def __str__(self) -> str:
        def side(hw: HW) -> str:
            return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"

        if self.min == self.max:
            return side(self.min)
        text = f"{side(self.min)}-{side(self.max)}"
        return text + (f"@{side(self.opt)}" if self.opt else "")


@dataclass(frozen=True)
class ProfileSpec:
    """A parsed ``--profile`` string: an optional name and a spatial spec per input (None: the only one)."""

    name: str | None
    inputs: dict[str | None, SpatialSpec]


@dataclass(frozen=True)
class InputRange:
    """min/opt/max full shapes (N, C, H, W) of one input."""

    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Sequence[int]) -> bool:
        shape = tuple(shape)
        if len(shape) != len(self.min):
            return False
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: Mapping) -> InputRange:
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


@dataclass(frozen=True)
class Profile:
    """A named resolution profile: an InputRange per image input."""

    name: str
    inputs: dict[str, InputRange] = field(hash=False)

    def contains(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        return all(name in shapes and r.contains(shapes[name]) for name, r in self.inputs.items())

    def opt_distance(self, shapes: Mapping[str, Sequence[int]]) -> float:
        """Sum over inputs of the Euclidean distance between the input's shape and the profile's opt."""
        total = 0.0
        for name, r in self.inputs.items():
            shape = shapes[name]
            total += sum((a - b) ** 2 for a, b in zip(shape, r.opt)) ** 0.5
        return total

    def area(self, which: str = "max") -> int:
        """Pixels per batch item at min, opt or max, summed over inputs."""
        return sum(getattr(r, which)[-2] * getattr(r, which)[-1] for r in self.inputs.values())

    @property
    def is_static(self) -> bool:
        return all(r.is_static for r in self.inputs.values())

    def describe(self) -> str:
        parts = []
        for name, r in self.inputs.items():
            spatial = SpatialSpec(tuple(r.min[-2:]), tuple(r.max[-2:]), tuple(r.opt[-2:]))
            if spatial.min == spatial.max:
                spatial = SpatialSpec(spatial.min, spatial.max)
            prefix = f"{name}:" if len(self.inputs) > 1 else ""
            batch = "" if r.min[0] == r.max[0] else f" batch {r.min[0]}-{r.max[0]}@{r.opt[0]}"
            parts.append(f"{prefix}{spatial}{batch}")
        return f"{self.name}=" + ",".join(parts)

    def to_dict(self) -> dict:
        return {"name": self.name, "inputs": {k: v.to_dict() for k, v in self.inputs.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> Profile:
        return cls(d["name"], {k: InputRange.from_dict(v) for k, v in d["inputs"].items()})


def _hw(h: str, w: str | None) -> HW:
    return (int(h), int(w if w is not None else h))


def parse_spatial(text: str) -> SpatialSpec:
    """``"96-160@128"`` -> SpatialSpec((96, 96), (160, 160), (128, 128))."""
    m = _SPEC.match(text.strip())
    if not m:
        raise ProfileError(
            f"profile {text!r} does not parse: expected SIZE, HxW, MIN-MAX[@OPT] or HxW-HxW[@HxW] "
            "(e.g. 224, 256x192, 96-160@128, 192x256-384x512@288x384)"
        )
    lo = _hw(m.group(1), m.group(2))
    hi = _hw(m.group(3), m.group(4)) if m.group(3) else lo
    opt = _hw(m.group(5), m.group(6)) if m.group(5) else (None if m.group(3) else lo)
    if min(*lo, *hi, *(opt or (1, 1))) < 1:
        raise ProfileError(f"profile {text!r}: expected sides of at least 1 pixel, got a side of 0")
    return SpatialSpec(lo, hi, opt)


def parse_profile(text: str) -> ProfileSpec:
    """Parse one ``--profile`` value (see the module docstring for the forms)."""
    text = text.strip()
    name = None
    if "=" in text:
        name, text = (part.strip() for part in text.split("=", 1))
        if not _NAME.match(name):
            raise ProfileError(f"profile name {name!r} is not a plain name (letters, digits, _ . -)")
    inputs: dict[str | None, SpatialSpec] = {}
    for part in text.split(","):
        part = part.strip()
        input_name = None
        if ":" in part:
            input_name, part = (p.strip() for p in part.split(":", 1))
        if input_name in inputs:
            raise ProfileError(f"profile {text!r} names input {input_name!r} twice")
        inputs[input_name] = parse_spatial(part)
    if None in inputs and len(inputs) > 1:
        raise ProfileError(f"profile {text!r}: with several inputs, name each one (input:SPEC,input:SPEC)")
    return ProfileSpec(name, inputs)


def parse_batch(text: str | None) -> tuple[int, int, int]:
    """``"1-8@1"`` -> (min, opt, max) = (1, 1, 8); ``"4"`` -> (4, 4, 4); None -> (1, 1, 1)."""
    if text is None or str(text).strip() == "":
        return (1, 1, 1)
    m = re.match(r"^(\d+)(?:-(\d+))?(?:@(\d+))?$", str(text).strip())
    if not m:
        raise ProfileError(f"batch {text!r} does not parse: expected N or MIN-MAX[@OPT] (e.g. 1-8@1)")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    opt = int(m.group(3)) if m.group(3) else lo
    if not (1 <= lo <= opt <= hi):
        raise ProfileError(f"batch {text!r}: expected 1 <= min <= opt <= max, got {lo}, {opt}, {hi}")
    return (lo, opt, hi)


def _snap(v: int, divisor: int) -> int:
    return max(divisor, (v // divisor) * divisor)


def make_profile(
    spec: ProfileSpec,
    channels: Mapping[str, int],
    batch: tuple[int, int, int] = (1, 1, 1),
    divisor: int | Mapping[str, int] = 1,
    index: int = 0,
) -> Profile:
    """Turn a parsed spec into a Profile with full NCHW shapes.

    ``channels`` maps each image input of the model to its channel count (its order is the model's).
    A spec without input names applies to the model's only image input.
    """
    names = list(channels)
    specs = dict(spec.inputs)
    if None in specs:
        if len(names) != 1:
            raise ProfileError(
                f"profile {spec_text(spec)!r} gives one size but the model has {len(names)} image inputs "
                f"({', '.join(names)}): give one per input, e.g. {names[0]}:96-160@128,{names[-1]}:224"
            )
        specs = {names[0]: specs.pop(None)}
    unknown = [n for n in specs if n not in channels]
    missing = [n for n in names if n not in specs]
    if unknown or missing:
        raise ProfileError(
            f"profile {spec_text(spec)!r}: expected sizes for inputs {names}, "
            f"got {list(specs)}" + (f" (unknown: {unknown})" if unknown else "") + (f" (missing: {missing})" if missing else "")
        )
    inputs = {}
    for name in names:
        s = specs[name]
        div = divisor[name] if isinstance(divisor, Mapping) else divisor
        opt = s.opt or (_snap((s.min[0] + s.max[0]) // 2, div), _snap((s.min[1] + s.max[1]) // 2, div))
        opt = (max(opt[0], s.min[0]), max(opt[1], s.min[1]))
        c = channels[name]
        inputs[name] = InputRange(
            (batch[0], c, *s.min), (batch[1], c, *opt), (batch[2], c, *s.max)
        )
    name = spec.name or _default_name(inputs, index)
    return Profile(name, inputs)


def spec_text(spec: ProfileSpec) -> str:
    body = ",".join(f"{k}:{v}" if k else str(v) for k, v in spec.inputs.items())
    return f"{spec.name}={body}" if spec.name else body


def _default_name(inputs: Mapping[str, InputRange], index: int) -> str:
    r = next(iter(inputs.values()))
    h, w = r.opt[-2:]
    return f"p{index}_{h}x{w}"


def check_profile(
    profile: Profile,
    divisor: int | Mapping[str, int] = 1,
    min_size: Mapping[str, HW] | HW | None = None,
    max_size: Mapping[str, HW] | HW | None = None,
) -> None:
    """Raise ProfileError unless min <= opt <= max, sizes are on the divisor and inside the valid range."""

    def per_input(v, name):  # a dict may leave out inputs without that constraint
        return v.get(name) if isinstance(v, Mapping) else v

    for name, r in profile.inputs.items():
        where = f"profile {profile.name!r}, input {name!r}"
        if not all(a <= b <= c for a, b, c in zip(r.min, r.opt, r.max)):
            raise ProfileError(
                f"{where}: expected min <= opt <= max on every axis, got min {list(r.min)}, "
                f"opt {list(r.opt)}, max {list(r.max)}"
            )
        div = per_input(divisor, name) or 1
        for label, shape in (("min", r.min), ("opt", r.opt), ("max", r.max)):
            h, w = shape[-2:]
            if h % div or w % div:
                raise ProfileError(
                    f"{where}: {label} size {h}x{w} is not a multiple of the model's divisor {div} "
                    f"(nearest: {_snap(h, div)}x{_snap(w, div)})"
                )
        lo = per_input(min_size, name) if min_size is not None else None
        hi = per_input(max_size, name) if max_size is not None else None
        if lo is not None and (r.min[-2] < lo[0] or r.min[-1] < lo[1]):
            raise ProfileError(
                f"{where}: min size {r.min[-2]}x{r.min[-1]} is below the model's valid minimum {lo[0]}x{lo[1]}"
            )
        if hi is not None and (r.max[-2] > hi[0] or r.max[-1] > hi[1]):
            raise ProfileError(
                f"{where}: max size {r.max[-2]}x{r.max[-1]} is above the model's valid maximum {hi[0]}x{hi[1]}"
            )


def complete_profiles(
    items: Iterable[str | ProfileSpec | Profile],
    channels: Mapping[str, int],
    batch: tuple[int, int, int] = (1, 1, 1),
    divisor: Mapping[str, int] | None = None,
    min_size: Mapping[str, HW | None] | None = None,
    max_size: Mapping[str, HW | None] | None = None,
) -> list[Profile]:
    """``--profile`` strings, specs or Profiles -> Profiles checked against one model's image inputs
    (``channels``: name -> channel count, in the model's order): unique names, a size for every input
    and no other, the model's channel counts, min <= opt <= max, the divisor, the valid size range.
    The one resolver behind ``build-engine`` and ``calibrate``."""
    divisor = dict(divisor or {})
    out: list[Profile] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if isinstance(item, Profile):
            profile = item
        else:
            spec = parse_profile(item) if isinstance(item, str) else item
            profile = make_profile(spec, channels, batch=batch, divisor=divisor, index=index)
        if profile.name in seen:
            raise ProfileError(
                f"profile name {profile.name!r} is used twice (profiles {seen[profile.name] + 1} and {index + 1}): "
                "expected unique names"
            )
        seen[profile.name] = index
        missing = [n for n in channels if n not in profile.inputs]
        if missing:
            raise ProfileError(f"profile {profile.name!r}: expected sizes for inputs {list(channels)}, missing {missing}")
        for name, r in profile.inputs.items():
            if name not in channels:
                raise ProfileError(f"profile {profile.name!r}: the model has no input {name!r} (inputs: {list(channels)})")
            c = channels[name]
            if r.min[1] != c or r.max[1] != c:
                raise ProfileError(
                    f"profile {profile.name!r}, input {name!r}: expected {c} channels, got {r.min[1]}-{r.max[1]}"
                )
        check_profile(profile, divisor, min_size, max_size)
        out.append(profile)
    return out


def select(profiles: Iterable[Profile], shapes: Mapping[str, Sequence[int]]) -> Profile | None:
    """Triton's rule: the profiles containing every input shape, then the nearest opt. None if none does."""
    fitting = [p for p in profiles if p.contains(shapes)]
    if not fitting:
        return None
    return min(fitting, key=lambda p: (p.opt_distance(shapes), p.area("max")))


def smallest_containing_padded(profiles: Iterable[Profile], shapes: Mapping[str, Sequence[int]]) -> Profile | None:
    """For the ``pad`` policy: the smallest profile (by max area) whose max holds every input after
    padding bottom/right, whose batch range holds the batch and whose channels match. None if none does."""

    def holds(p: Profile) -> bool:
        for name, r in p.inputs.items():
            s = shapes.get(name)
            if s is None or len(s) != len(r.max):
                return False
            if not (r.min[0] <= s[0] <= r.max[0]) or s[1] != r.max[1]:
                return False
            if s[-2] > r.max[-2] or s[-1] > r.max[-1]:
                return False
        return True

    fitting = [p for p in profiles if holds(p)]
    return min(fitting, key=lambda p: p.area("max")) if fitting else None


def padded_shape(profile: Profile, name: str, shape: Sequence[int], divisor: int = 1) -> Shape:
    """The shape an input is padded to under the ``pad`` policy: each side up to the next multiple of
    the divisor and at least the profile's min (a static profile: exactly its size)."""
    r = profile.inputs[name]

    def up(v: int, lo: int) -> int:
        return max(lo, -(-v // divisor) * divisor)

    return (shape[0], shape[1], up(shape[-2], r.min[-2]), up(shape[-1], r.min[-1]))


def nearest_by_opt(profiles: Iterable[Profile], shapes: Mapping[str, Sequence[int]]) -> Profile:
    """For the ``resize`` policy: the profile whose opt is nearest to the input (any containment)."""
    return min(profiles, key=lambda p: (p.opt_distance(shapes), p.area("max")))


def load_profiles_file(path: str) -> tuple[list[ProfileSpec], str | None]:
    """Read a profiles file (YAML or JSON): ``{"profiles": ["small=96-160@128", ...], "batch": "1-4@1"}``
    or a plain list of strings. Returns the parsed specs and the batch text (None when not given)."""
    import json
    from pathlib import Path

    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"profiles file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ProfileError(f"profiles file {path}: neither JSON nor YAML ({e})") from None
    batch = None
    if isinstance(data, dict):
        items, batch = data.get("profiles"), data.get("batch")
    else:
        items = data
    if not isinstance(items, list) or not items:
        raise ProfileError(
            f"profiles file {path}: expected a list of profile strings (or {{'profiles': [...]}}), got {type(items).__name__}"
        )
    return [parse_profile(str(item)) for item in items], (str(batch) if batch is not None else None)
