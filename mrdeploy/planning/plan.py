"""Plan resolution profiles from the sizes real data has.

Formulation
-----------
Every image size (h, w) is first rounded up to the model's divisor and raised to its minimum size (that
is what the ``pad`` policy does to it anyway); sizes above the maximum valid size cannot be padded into
any profile and are reported as ``skipped``.

A plan is K *buckets*: sizes (H_k, W_k). An input of (rounded) size (h, w) is served by the smallest-area
bucket with H_k >= h and W_k >= w (the runtime's pad rule: ``smallest_containing_padded``) and costs
H_k * W_k pixels of compute, of which H_k * W_k - h_raw * w_raw are padding. The plan minimizes the
expected padded pixels, i.e. sum over inputs of the area of the bucket serving it; the largest bucket
must hold the largest height and the largest width.

An optimal bucket can always be shrunk to (max h, max w) of the inputs it serves without raising the
cost, so the buckets are searched among the grid of data heights x data widths (pruned to points that
are such a max: a height and a width both reached by a size inside). The search is

- exact by dynamic programming when the sizes form a chain (each one holds the previous: square images,
  or one aspect ratio): K contiguous groups of the area-sorted sizes, O(K n^2);
- exact by exhaustive search over the candidate buckets when there are at most ``exhaustive_limit``
  combinations;
- otherwise greedily (the plan for K-1 plus the best extra bucket) followed by local search (swap one
  bucket for another candidate while the cost drops), flagged ``exact=False``.

Profiles written from a plan are static by default (``HxW``: the runtime pads each input to exactly the
bucket, so the planned cost is exactly what is paid), or ranged (``mode="ranged"``: each profile spans the
sizes it serves, ``min`` = the smallest raw h and w it serves floored to the divisor (so the runtime's
containment rule keeps every one of them), ``max`` = the bucket, ``opt`` = the most frequent size it
serves; an engine then runs any size inside, so the planned cost is what a static engine would pay and
an upper bound for the ranged one). The profiles file records ``policy: pad``, the rule the cost model
assumes; ``build-engine --profiles FILE`` uses it unless ``--policy`` is given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrdeploy.errors import InputError, ProfileError
from mrdeploy.planning.search import Problem, round_up, solve

HW = tuple[int, int]


@dataclass
class Bucket:
    size: HW  # the profile's max (and the size a static profile pads to)
    min: HW  # smallest h and w it serves
    opt: HW  # most frequent size it serves
    count: int  # inputs served
    padded_fraction: float  # of the pixels computed for these inputs, the fraction that is padding


@dataclass
class Choice:
    k: int
    buckets: list[Bucket]
    cost: float  # sum over inputs of served pixels
    padded_fraction: float  # (served - real) / served
    exact: bool
    method: str


@dataclass
class Plan:
    """The chosen plan (``chosen``) and the best plan for every K = 1..max_profiles."""

    choices: list[Choice]
    total: int  # inputs counted
    skipped: int  # inputs above the maximum valid size
    divisor: int
    min_size: HW | None
    max_size: HW | None
    distinct: int  # distinct rounded sizes
    mode: str = "static"
    notes: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> Choice:
        return self.choices[-1]

    def profile_strings(
        self, mode: str | None = None, input_name: str | None = None, others: Sequence[str] = ()
    ) -> list[str]:
        """Profile strings ``build-engine --profile`` accepts, for the chosen K. For a model with several
        image inputs, ``input_name`` is the planned one and ``others`` the fixed specs of the rest
        (``["template:112-128@128"]``), appended to every profile."""
        mode = mode or self.mode
        out = []
        for i, b in enumerate(self.chosen.buckets):
            name = f"p{i}_{b.size[0]}x{b.size[1]}"
            if mode == "static" or b.min == b.size:
                spec = _side(b.size)
            else:
                spec = f"{_side(b.min)}-{_side(b.size)}@{_side(b.opt)}"
            if input_name:
                spec = ",".join([f"{input_name}:{spec}", *others])
            out.append(f"{name}={spec}")
        return out

    def table(self) -> str:
        lines = [
            f"{self.total} inputs, {self.distinct} distinct sizes after rounding to the divisor {self.divisor}"
            + (f", {self.skipped} above the maximum size {self.max_size[0]}x{self.max_size[1]} skipped" if self.skipped else ""),
            f"{'K':>2}  {'padded':>7}  {'search':<10}  profiles (size: inputs served, padded)",
        ]
        for c in self.choices:
            desc = ", ".join(
                f"{b.size[0]}x{b.size[1]}: {b.count}, {b.padded_fraction:.1%}" for b in c.buckets
            )
            lines.append(f"{c.k:>2}  {c.padded_fraction:>7.1%}  {c.method:<10}  {desc}")
        return "\n".join(lines)

    def to_file_dict(self, input_name: str | None = None, others: Sequence[str] = ()) -> dict:
        c = self.chosen
        return {
            "profiles": self.profile_strings(input_name=input_name, others=others),
            # the cost model pads every counted size into its bucket: the bundle must do the same
            "policy": "pad",
            "plan": {
                "inputs": self.total,
                "skipped": self.skipped,
                "divisor": self.divisor,
                "mode": self.mode,
                "padded_fraction": round(c.padded_fraction, 6),
                "by_k": {ch.k: round(ch.padded_fraction, 6) for ch in self.choices},
                "exact": c.exact,
            },
        }


def _side(hw: HW) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def plan_profiles(
    sizes: Iterable[HW],
    max_profiles: int = 3,
    *,
    divisor: int = 1,
    min_size: HW | int | None = None,
    max_size: HW | int | None = None,
    mode: str = "static",
    exhaustive_limit: int = 200_000,
) -> Plan:
    """Choose up to ``max_profiles`` profiles minimizing expected padded pixels (see the module docstring).

    Returns the best plan for every K = 1..max_profiles (stopping early when every distinct size has its
    own profile); ``plan.chosen`` is the one for the largest K.
    """
    if max_profiles < 1:
        raise ProfileError(f"--max-profiles: expected at least 1, got {max_profiles}")
    if mode not in ("static", "ranged"):
        raise ProfileError(f"plan mode: expected 'static' or 'ranged', got {mode!r}")
    divisor = int(divisor or 1)
    lo = (min_size, min_size) if isinstance(min_size, int) else (tuple(min_size) if min_size else None)
    hi = (max_size, max_size) if isinstance(max_size, int) else (tuple(max_size) if max_size else None)
    groups: dict[HW, list[int]] = {}
    total = skipped = 0
    for h, w in sizes:
        total += 1
        r = round_up((int(h), int(w)), divisor, lo)
        if hi is not None and (r[0] > hi[0] or r[1] > hi[1]):
            skipped += 1
            continue
        g = groups.setdefault(r, [0, 0, int(h), int(w)])
        g[0] += 1
        g[1] += int(h) * int(w)
        g[2], g[3] = min(g[2], int(h)), min(g[3], int(w))
    if total == 0:
        raise InputError("no image sizes to plan from")
    if not groups:
        raise ProfileError(
            f"all {total} sizes are above the model's maximum size {hi[0]}x{hi[1]}: nothing a profile can serve"
        )
    p = Problem({s: tuple(g) for s, g in groups.items()})
    choices = []
    combo = [p.top]
    for k in range(1, max_profiles + 1):
        combo, exact, method = solve(p, k, exhaustive_limit, combo)
        choices.append(_describe(p, combo, k, exact, method, divisor, lo))
        if k >= len(p.sizes):
            break
    notes = []
    if len(choices) < max_profiles:
        notes.append(f"only {len(p.sizes)} distinct sizes: {len(choices)} profiles serve each exactly")
    return Plan(choices, total, skipped, divisor, lo, hi, len(p.sizes), mode, notes)


def _range_min(raw: int, divisor: int, lo: int | None) -> int:
    """A ranged profile's min side: the smallest raw side it serves floored to the divisor (the runtime
    keeps an input whose raw size is inside a profile and pads it up to the divisor), at least the
    model's valid minimum."""
    v = max(divisor, raw // divisor * divisor)
    return max(v, -(-lo // divisor) * divisor) if lo is not None else v


def _describe(p: Problem, combo: Sequence[int], k: int, exact: bool, method: str, divisor: int = 1,
              lo: HW | None = None) -> Choice:
    combo = sorted(set(combo), key=lambda i: p.area[i])
    served = p.served(combo)
    assign = np.argmin(np.where(p.fits[combo], p.area[combo][:, None], np.inf), axis=0)
    buckets = []
    for j, ci in enumerate(combo):
        members = np.nonzero(assign == j)[0]
        if len(members) == 0:
            continue
        size = p.cands[ci]
        cnt = p.count[members]
        mh = _range_min(int(p.raw_h[members].min()), divisor, lo[0] if lo else None)
        mw = _range_min(int(p.raw_w[members].min()), divisor, lo[1] if lo else None)
        top = members[np.argmax(cnt)]  # most frequent; ties: the smallest by area (sizes are area-sorted)
        served_px = float(p.area[ci] * cnt.sum())
        real_px = float(p.raw_px[members].sum())
        buckets.append(
            Bucket(size, (mh, mw), (int(p.h[top]), int(p.w[top])), int(cnt.sum()), 1.0 - real_px / served_px)
        )
    cost = float(served @ p.count)
    return Choice(k, buckets, cost, 1.0 - p.raw / cost, exact, method)


def file_policy(path: str | os.PathLike | None) -> str | None:
    """The ``policy`` a profiles file records (plans write ``pad``), or None."""
    if path is None or not Path(path).is_file():
        return None
    import json

    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return None
    return data.get("policy") if isinstance(data, dict) else None
