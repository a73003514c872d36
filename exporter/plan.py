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

import itertools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrdeploy.errors import InputError, ProfileError
from mrdeploy.runtime.images import IMAGE_SUFFIXES, image_files, image_size  # the one image path

HW = tuple[int, int]


# ---------------------------------------------------------------------------------------------- sizes


def sizes_from(path: str | os.PathLike) -> list[HW]:
    """Image sizes (h, w): of every image under DIR (recursively; only headers are read; EXIF orientation
    applied, as the runtime does), or from a text file with one ``HxW`` per line (optionally
    ``HxW COUNT``; ``#`` starts a comment)."""
    path = Path(path)
    if path.is_dir():
        return _sizes_from_dir(path)
    if not path.is_file():
        raise InputError(f"--sizes-from {path}: no such file or directory")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _sizes_from_images([path], path)
    return _sizes_from_text(path)


def _sizes_from_dir(root: Path) -> list[HW]:
    files = image_files(root)
    if not files:
        raise InputError(
            f"--sizes-from {root}: expected image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder, found none"
        )
    return _sizes_from_images(files, root)


def _sizes_from_images(files: Sequence[Path], where: Path) -> list[HW]:
    sizes, bad = [], []
    for f in files:
        try:
            sizes.append(image_size(f))  # header only, EXIF orientation applied as the runtime serves it
        except InputError:
            bad.append(f)
    if not sizes:
        raise InputError(f"--sizes-from {where}: none of the {len(files)} image files could be read (first: {bad[0]})")
    return sizes


def _sizes_from_text(path: Path) -> list[HW]:
    sizes: list[HW] = []
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        try:
            h, _, w = parts[0].lower().partition("x")
            hw = (int(h), int(w))
            count = int(parts[1]) if len(parts) > 1 else 1
            if len(parts) > 2 or hw[0] <= 0 or hw[1] <= 0 or count < 0:
                raise ValueError
        except (ValueError, IndexError):
            raise InputError(
                f"{path}:{lineno}: expected HxW or HxW COUNT (e.g. 480x640 or 480x640 12), got {raw.strip()!r}"
            ) from None
        sizes.extend([hw] * count)
    if not sizes:
        raise InputError(f"{path}: expected lines of HxW sizes, found none")
    return sizes


# ---------------------------------------------------------------------------------------------- plan


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


def _round(hw: HW, divisor: int, lo: HW | None) -> HW:
    h = -(-hw[0] // divisor) * divisor
    w = -(-hw[1] // divisor) * divisor
    if lo is not None:
        h, w = max(h, -(-lo[0] // divisor) * divisor), max(w, -(-lo[1] // divisor) * divisor)
    return (h, w)


class _Problem:
    """Distinct rounded sizes with counts and raw pixels, and the candidate buckets."""

    def __init__(self, groups: dict[HW, tuple[int, int]]):
        self.sizes = sorted(groups, key=lambda s: (s[0] * s[1], s))
        self.h = np.array([s[0] for s in self.sizes], dtype=np.int64)
        self.w = np.array([s[1] for s in self.sizes], dtype=np.int64)
        self.count = np.array([groups[s][0] for s in self.sizes], dtype=np.float64)
        self.raw_px = np.array([groups[s][1] for s in self.sizes], dtype=np.float64)  # real pixels
        self.raw_h = np.array([groups[s][2] for s in self.sizes], dtype=np.int64)  # smallest raw h / w
        self.raw_w = np.array([groups[s][3] for s in self.sizes], dtype=np.int64)  # rounded to this size
        self.raw = float(self.raw_px.sum())
        hs, ws = sorted(set(self.h.tolist())), sorted(set(self.w.tolist()))
        cands = []
        for H in hs:
            for W in ws:
                # useful: some size inside reaches H and some size inside reaches W
                inside = (self.h <= H) & (self.w <= W)
                if np.any(inside & (self.h == H)) and np.any(inside & (self.w == W)):
                    cands.append((H, W))
        self.cands = sorted(cands, key=lambda s: (s[0] * s[1], s))
        ch = np.array([c[0] for c in self.cands])[:, None]
        cw = np.array([c[1] for c in self.cands])[:, None]
        self.fits = (ch >= self.h[None, :]) & (cw >= self.w[None, :])  # (n_cand, n_sizes)
        self.area = np.array([c[0] * c[1] for c in self.cands], dtype=np.float64)
        self.top = self.cands.index((int(self.h.max()), int(self.w.max())))

    def is_chain(self) -> bool:
        return bool(np.all(np.diff(self.h) >= 0) and np.all(np.diff(self.w) >= 0))

    def served(self, combo: Sequence[int]) -> np.ndarray:
        """Per size: the area of the bucket serving it (inf when none holds it)."""
        idx = np.asarray(combo)
        a = np.where(self.fits[idx], self.area[idx][:, None], np.inf)
        return a.min(axis=0)

    def cost(self, combo: Sequence[int]) -> float:
        return float(self.served(combo) @ self.count)

    def costs(self, combos: np.ndarray) -> np.ndarray:
        """Vectorized cost of many combos (M, K)."""
        a = np.where(self.fits[combos], self.area[combos][:, :, None], np.inf)  # (M, K, G)
        return a.min(axis=1) @ self.count


def _dp_chain(p: _Problem, k: int) -> list[int]:
    """Exact for chains: K contiguous groups of the area-sorted sizes, each served by its last size."""
    n = len(p.sizes)
    csum = np.concatenate([[0.0], np.cumsum(p.count)])
    areas = (p.h * p.w).astype(np.float64)
    inf = math.inf
    best = np.full((k + 1, n + 1), inf)
    back = np.zeros((k + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for j in range(1, k + 1):
        for e in range(1, n + 1):
            # group s..e-1 served by size e-1; needs size e-1 to hold all of them
            for s in range(e - 1, -1, -1):
                if not (p.h[s] <= p.h[e - 1] and p.w[s] <= p.w[e - 1]):
                    break
                v = best[j - 1, s] + areas[e - 1] * (csum[e] - csum[s])
                if v < best[j, e]:
                    best[j, e], back[j, e] = v, s
    j = int(np.argmin(best[1:, n])) + 1
    cuts, e = [], n
    while e > 0:
        cuts.append(e - 1)
        e = back[j, e]
        j -= 1
    return sorted({p.cands.index((int(p.h[i]), int(p.w[i]))) for i in cuts})


def _greedy_add(p: _Problem, combo: list[int]) -> list[int]:
    """Add the one candidate bucket that lowers the cost most."""
    trial = np.array([[*combo, i] for i in range(len(p.cands))], dtype=np.int64)
    return sorted(set(trial[int(np.argmin(p.costs(trial)))].tolist()))


def _local_search(p: _Problem, combo: list[int], max_rounds: int = 50) -> list[int]:
    combo = list(combo)
    best = p.cost(combo)
    for _ in range(max_rounds):
        improved = False
        for pos in range(len(combo)):
            if combo[pos] == p.top:
                continue
            trial = np.array([combo] * len(p.cands))
            trial[:, pos] = np.arange(len(p.cands))
            costs = p.costs(trial)
            i = int(np.argmin(costs))
            if costs[i] < best - 1e-9:
                best, combo[pos], improved = float(costs[i]), i, True
        if not improved:
            break
    return sorted(set(combo))


def _exhaustive(p: _Problem, k: int) -> list[int]:
    others = [i for i in range(len(p.cands)) if i != p.top]
    best, best_combo = math.inf, [p.top]
    batch: list[tuple[int, ...]] = []

    def flush():
        nonlocal best, best_combo
        if not batch:
            return
        arr = np.array([(p.top, *c) for c in batch], dtype=np.int64)
        costs = p.costs(arr)
        i = int(np.argmin(costs))
        if costs[i] < best - 1e-9:
            best, best_combo = float(costs[i]), sorted(arr[i].tolist())
        batch.clear()

    for c in itertools.combinations(others, k - 1):
        batch.append(c)
        if len(batch) >= 4096:
            flush()
    flush()
    return best_combo


def _solve(p: _Problem, k: int, exhaustive_limit: int, prev: list[int]) -> tuple[list[int], bool, str]:
    if k >= len(p.sizes):
        return sorted({p.cands.index(s) for s in p.sizes}), True, "all sizes"
    if k == 1:
        return [p.top], True, "exact"
    if p.is_chain():
        return _dp_chain(p, k), True, "exact DP"
    if math.comb(len(p.cands) - 1, k - 1) <= exhaustive_limit:
        return _exhaustive(p, k), True, "exhaustive"
    # greedy: the best plan for K-1 plus the best extra bucket, then swaps while the cost drops
    start = _greedy_add(p, prev) if len(prev) < k else prev
    return _local_search(p, start), False, "heuristic"


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
        r = _round((int(h), int(w)), divisor, lo)
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
    p = _Problem({s: tuple(g) for s, g in groups.items()})
    choices = []
    combo = [p.top]
    for k in range(1, max_profiles + 1):
        combo, exact, method = _solve(p, k, exhaustive_limit, combo)
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


def _describe(p: _Problem, combo: Sequence[int], k: int, exact: bool, method: str, divisor: int = 1,
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


def brute_force_cost(sizes: Iterable[HW], k: int, divisor: int = 1) -> float:
    """Reference for tests: the minimal total served pixels over ALL sets of <= k buckets drawn from the
    full grid of rounded heights x widths (no pruning), each input served by its smallest holding bucket."""
    from collections import Counter

    rounded = Counter(_round((int(h), int(w)), divisor, None) for h, w in sizes)
    hs, ws = sorted({s[0] for s in rounded}), sorted({s[1] for s in rounded})
    grid = [(a, b) for a in hs for b in ws]
    best = math.inf
    for n in range(1, k + 1):
        for combo in itertools.combinations(grid, n):
            total = 0.0
            for (h, w), count in rounded.items():
                fit = [a * b for a, b in combo if a >= h and b >= w]
                if not fit:
                    total = math.inf
                    break
                total += count * min(fit)
            best = min(best, total)
    return best


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
