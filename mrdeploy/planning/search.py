"""The search behind :func:`mrdeploy.planning.plan_profiles`: K buckets minimizing the pixels computed
(exact DP for chains, exhaustive when small, else greedy + local search), and a brute-force check."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np

HW = tuple[int, int]


def round_up(hw: HW, divisor: int, lo: HW | None) -> HW:
    h = -(-hw[0] // divisor) * divisor
    w = -(-hw[1] // divisor) * divisor
    if lo is not None:
        h, w = max(h, -(-lo[0] // divisor) * divisor), max(w, -(-lo[1] // divisor) * divisor)
    return (h, w)


class Problem:
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


def dp_chain(p: Problem, k: int) -> list[int]:
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


def greedy_add(p: Problem, combo: list[int]) -> list[int]:
    """Add the one candidate bucket that lowers the cost most."""
    trial = np.array([[*combo, i] for i in range(len(p.cands))], dtype=np.int64)
    return sorted(set(trial[int(np.argmin(p.costs(trial)))].tolist()))


def local_search(p: Problem, combo: list[int], max_rounds: int = 50) -> list[int]:
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


def exhaustive(p: Problem, k: int) -> list[int]:
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


def solve(p: Problem, k: int, exhaustive_limit: int, prev: list[int]) -> tuple[list[int], bool, str]:
    if k >= len(p.sizes):
        return sorted({p.cands.index(s) for s in p.sizes}), True, "all sizes"
    if k == 1:
        return [p.top], True, "exact"
    if p.is_chain():
        return dp_chain(p, k), True, "exact DP"
    if math.comb(len(p.cands) - 1, k - 1) <= exhaustive_limit:
        return exhaustive(p, k), True, "exhaustive"
    # greedy: the best plan for K-1 plus the best extra bucket, then swaps while the cost drops
    start = greedy_add(p, prev) if len(prev) < k else prev
    return local_search(p, start), False, "heuristic"


def brute_force_cost(sizes: Iterable[HW], k: int, divisor: int = 1) -> float:
    """Reference for tests: the minimal total served pixels over ALL sets of <= k buckets drawn from the
    full grid of rounded heights x widths (no pruning), each input served by its smallest holding bucket."""
    from collections import Counter

    rounded = Counter(round_up((int(h), int(w)), divisor, None) for h, w in sizes)
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
