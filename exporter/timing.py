"""Engines timed side by side in the building process: what ``--backend auto`` and the source rule measure.

The engines are loaded together and called in turn, the order rotated each round, one untimed call before
each candidate's timed calls (the previous candidate's caches are cold for it), at the profile's opt shape
and at its min and max too for a ranged profile, on the same random input. A candidate's score is the
geometric mean over those shapes of its median milliseconds.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Hashable, Mapping

import numpy as np

from mrdeploy.runtime.profiles import Profile

ROUNDS = 5  # timing rounds (candidates rotate within a round)
CALLS = 6  # timed calls per candidate, shape and round (after one untimed call)


def shape_kinds(profile: Profile) -> list[str]:
    """``opt``, plus ``min`` and ``max`` where some input's range differs from its opt."""
    inputs = profile.inputs.values()
    return ["opt"] + [k for k in ("min", "max") if any(getattr(r, k) != r.opt for r in inputs)]


def score(ms: Mapping[str, float]) -> float:
    """The geometric mean of the per-shape milliseconds."""
    return math.exp(statistics.fmean(math.log(v) for v in ms.values()))


def time_engines(engines: Mapping[Hashable, object], profile: Profile) -> dict[Hashable, dict[str, float]]:
    """Median ms per shape kind of each engine (``run(feeds)`` and ``input_dtypes``), keyed as given."""
    kinds = shape_kinds(profile)
    rng = np.random.default_rng(0)
    feeds = {k: {n: rng.standard_normal(getattr(r, k)).astype(np.float32) for n, r in profile.inputs.items()}
             for k in kinds}
    out: dict[Hashable, dict[str, float]] = {key: {} for key in engines}
    for kind in kinds:
        calls = {}
        for key, eng in engines.items():
            f = {n: a.astype(eng.input_dtypes.get(n, a.dtype), copy=False) for n, a in feeds[kind].items()}
            calls[key] = (lambda e=eng, f=f: e.run(f))
        times: dict[Hashable, list[float]] = {key: [] for key in calls}
        order = list(calls)
        for r in range(ROUNDS):
            for key in order[r % len(order):] + order[: r % len(order)]:
                calls[key]()  # untimed
                for _ in range(CALLS):
                    t = time.perf_counter()
                    calls[key]()
                    times[key].append(time.perf_counter() - t)
        for key in calls:
            out[key][kind] = statistics.median(times[key]) * 1e3
    return out
