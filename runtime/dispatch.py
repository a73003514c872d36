"""Which profile serves an input, and how: the Decision (pure Python, no engines involved).

1. The profiles whose range contains every input shape, then the nearest opt (Triton's rule). An input
   inside a ranged profile but off the model's divisor is padded up to the divisor (action ``pad``).
2. Otherwise the policy:
   - ``pad``: pad bottom/right to the smallest profile that holds the input (sizes rounded up to the
     divisor, at least the profile's min); spatial outputs are cropped back.
   - ``resize``: bilinear resize to the opt of the nearest profile; spatial outputs resized back.
   - ``letterbox``: resize keeping the aspect ratio to fit the nearest profile's opt, pad the rest;
     spatial outputs cropped to the content and resized back (runtime/fitting.py).
   - ``error``: an InputError naming the input size and every profile's range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mrdeploy.errors import InputError, PolicyError
from mrdeploy.runtime import profiles as P
from mrdeploy.runtime.profiles import Profile

POLICIES = ("pad", "resize", "letterbox", "error")


def check_policy(policy: str) -> None:
    """PolicyError (the one type for an unknown policy, wherever it is given) unless ``policy`` is known."""
    if policy not in POLICIES:
        raise PolicyError(f"unknown policy {policy!r}: expected one of {', '.join(POLICIES)}")

Shape = tuple[int, ...]


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


@dataclass(frozen=True)
class Decision:
    """The profile chosen for an input and what is done to the input to fit it."""

    profile: Profile
    action: str  # "exact" | "pad" | "resize" | "letterbox"
    input_shapes: dict[str, Shape]
    served_shapes: dict[str, Shape]
    policy: str  # the policy in force ("exact" decisions do not use it)
    content_shapes: dict[str, Shape] | None = None  # letterbox: the resized input inside the padding

    @property
    def profile_name(self) -> str:
        return self.profile.name

    def __str__(self) -> str:
        parts = []
        for name, shape in self.input_shapes.items():
            served = self.served_shapes[name]
            prefix = f"{name} " if len(self.input_shapes) > 1 else ""
            if self.action == "exact":
                parts.append(f"{prefix}{_fmt(shape)}")
            elif self.action == "letterbox":
                inner = _fmt(self.content_shapes[name][-2:])
                parts.append(f"{prefix}{_fmt(shape)} -> {inner} in {_fmt(served)}")
            else:
                parts.append(f"{prefix}{_fmt(shape)} -> {_fmt(served)}")
        return f"profile {self.profile.describe()}: {self.action} {', '.join(parts)}"


def describe_ranges(profiles: Sequence[Profile]) -> str:
    return "; ".join(p.describe() for p in profiles)


def _batch_ok(p: Profile, shapes: Mapping[str, Shape]) -> bool:
    return all(r.min[0] <= shapes[n][0] <= r.max[0] for n, r in p.inputs.items())


def decide(
    profiles: Sequence[Profile],
    shapes: Mapping[str, Sequence[int]],
    policy: str,
    divisors: Mapping[str, int],
) -> Decision:
    """The Decision for full NCHW ``shapes`` (already checked for rank and channels)."""
    check_policy(policy)
    shapes = {n: tuple(int(d) for d in s) for n, s in shapes.items()}

    batch_fit = [p for p in profiles if _batch_ok(p, shapes)]
    if not batch_fit:
        ranges = ", ".join(
            f"{p.name}: " + "/".join(f"{r.min[0]}-{r.max[0]}" for r in p.inputs.values()) for p in profiles
        )
        batches = ", ".join(f"{n} {s[0]}" for n, s in shapes.items())
        raise InputError(f"batch size {batches} is outside every profile's batch range ({ranges})")

    def padded(p: Profile) -> dict[str, Shape]:
        return {n: P.padded_shape(p, n, s, divisors.get(n, 1)) for n, s in shapes.items()}

    # 1. Triton's rule over the profiles that contain the input (after rounding up to the divisor).
    containing = [p for p in batch_fit if p.contains(shapes) and p.contains(padded(p))]
    chosen = P.select(containing, shapes)
    if chosen is not None:
        served = padded(chosen)
        action = "exact" if served == shapes else "pad"
        return Decision(chosen, action, shapes, served, policy)

    # 2. The policy.
    if policy == "pad":
        p = P.smallest_containing_padded(batch_fit, shapes)
        if p is not None and p.contains(padded(p)):
            return Decision(p, "pad", shapes, padded(p), policy)
        raise _outside(profiles, shapes, "pad", "larger than every profile's max, so it cannot be padded")
    if policy == "resize":
        p = P.nearest_by_opt(batch_fit, shapes)
        served = {n: (s[0], s[1], *p.inputs[n].opt[-2:]) for n, s in shapes.items()}
        return Decision(p, "resize", shapes, served, policy)
    if policy == "letterbox":
        p = P.nearest_by_opt(batch_fit, shapes)
        served = {n: (s[0], s[1], *p.inputs[n].opt[-2:]) for n, s in shapes.items()}
        return Decision(p, "letterbox", shapes, served, policy, {n: letterbox_shape(s, served[n]) for n, s in shapes.items()})
    raise _outside(profiles, shapes, "error", "")


def letterbox_shape(shape: Shape, served: Shape) -> Shape:
    """The size ``shape`` is resized to inside ``served``, keeping its aspect ratio (each side >= 1)."""
    h, w = shape[-2:]
    f = min(served[-2] / h, served[-1] / w)
    return (*shape[:2], max(1, min(served[-2], round(h * f))), max(1, min(served[-1], round(w * f))))


def _outside(profiles: Sequence[Profile], shapes: Mapping[str, Shape], policy: str, why: str) -> InputError:
    size = ", ".join(f"{n!r} {_fmt(s)}" for n, s in shapes.items())
    hint = " (policy 'resize' serves it at the nearest profile's opt)" if policy == "pad" else (
        " (use policy 'pad' or 'resize' to serve it anyway)"
    )
    reason = f", {why}" if why else ""
    return InputError(
        f"input {size} is outside every profile{reason} under policy {policy!r}{hint}; "
        f"profiles: {describe_ranges(profiles)}"
    )
