"""Accuracy of a quantized model against FP32 on held-out samples, and FP32 vs INT8 latency.

Metrics (the *drop* is what ``--max-drop`` bounds):

- ``top1``: classification, the expected fraction of (sample, size) pairs whose INT8 top-1 class
  differs from FP32's. With 10-50 held-out samples the observed fraction moves in steps of 1/N, so the
  drop is estimated by :func:`pooled_flip_rate` (every pair's INT8-FP32 logit error applied to every
  pair's FP32 logits: N^2 trials from N pairs); from ``OBSERVED_MIN_ROWS`` pairs on, the estimate is the
  larger of that and the observed fraction, and the drop held to the budget is its upper bound
  (:func:`upper_bound`, one standard error above it); the estimate and the observed fraction are
  reported beside it. A held-out sample counts as a pair at each size it is scored at, as is and
  mirrored (:func:`~mrdeploy.calibration.preprocess.heldout_feeds`); the drop is the worst of all pairs
  together and of each size with OBSERVED_MIN_ROWS pairs of its own (:meth:`Scorer.score`). Pairs
  whose FP32 class flips under one grey level of noise (:func:`stable_rows`: a texture far from every
  class, two classes neck and neck) are left out: no quantized model can be held to them, and with few
  samples one such pair decides the budget;
- ``pixel``: segmentation, 1 - the fraction of pixels whose INT8 argmax class agrees with FP32's;
- ``cosine``: anything else, 1 - the mean cosine similarity of INT8 and FP32 outputs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrdeploy._ort import cpu_session
from mrdeploy.calibration.preprocess import chunks, group_by_shape
from mrdeploy.errors import CalibrationError

METRICS = ("top1", "pixel", "cosine")
BATCH = 16


def metric_for(task: str) -> str:
    return {"classification": "top1", "segmentation": "pixel"}.get(task, "cosine")


# ONNX Runtime session entries for Q/DQ models. Its WeightBiasQuantization transformer quantizes the float
# weights of a node that sits between a DequantizeLinear and a QuantizeLinear (a node the accuracy budget
# kept float) per tensor, to fuse it into an integer kernel: on EfficientNet-Lite1 keeping its first
# block float then cut cosine to FP32 from 0.998 to 0.94. Bundles record these for their INT8 profiles.
INT8_SESSION_CONFIG = {"optimization.disable_specified_optimizers": "WeightBiasQuantization"}


def session(path: str | Path, threads: int | None = None):
    """A CPU session for a calibration candidate (INT8_SESSION_CONFIG applied)."""
    return cpu_session(path, threads, config=INT8_SESSION_CONFIG)


def run_batches(sess, feeds: Sequence[dict[str, np.ndarray]], output: str,
                batch: tuple[int, int] = (1, BATCH)) -> list[np.ndarray]:
    """Run per-sample feeds grouped by shape in batches; returns per-shape-group outputs in group order."""
    outs = []
    for group in group_by_shape(feeds):
        parts = [sess.run([output], feed)[0][:real] for feed, real in chunks(group, batch, BATCH)]
        outs.append(np.concatenate(parts))
    return outs


def pooled_flip_rate(ref: Sequence[np.ndarray], got: Sequence[np.ndarray], max_pairs: int = 256) -> float:
    """The fraction of trials (i, j) in which FP32 logits of pair i plus the INT8 error of pair j change
    pair i's top-1 class: an estimate of the top-1 flip rate that is continuous in the size of the errors
    (a margin half used up counts where a flip count sees nothing). Its diagonal is the observed rate."""
    r = np.concatenate([a.reshape(len(a), -1) for a in ref]).astype(np.float32)
    g = np.concatenate([a.reshape(len(a), -1) for a in got]).astype(np.float32)
    errors = (g - r)[np.linspace(0, len(r) - 1, min(len(r), max_pairs)).astype(int)]
    top = r.argmax(1)
    flips = 0
    for i in range(len(r)):
        flips += int(np.count_nonzero((r[i] + errors).argmax(1) != top[i]))
    return flips / (len(r) * len(errors))


NOISE_DRAWS = 2
# from this many scored pairs on, one flip moves the observed top-1 drop by at most 0.02, and the drop
# is the larger of the pooled estimate and the observed fraction: the pooled estimate assumes a pair's
# error is as likely to flip any other pair, but the pairs that flip have both small margins and large
# errors (EfficientNet-Lite1, 84-102 stable held-out pairs: pooled 0.025-0.029, observed 0.039-0.052,
# and 0.05-0.13 on the evaluation crops; benchmarks/bench_real_int8.py)
OBSERVED_MIN_ROWS = 50


def stable_rows(sess, feeds: Sequence[dict[str, np.ndarray]], output: str, reference: Sequence[np.ndarray],
                batch: tuple[int, int] = (1, BATCH), seed: int = 0) -> np.ndarray:
    """Per (concatenated) reference row: True when FP32's top-1 class survives ``NOISE_DRAWS`` draws of
    Gaussian noise of one grey level (the sample's value range / 255) added to its input."""
    rng = np.random.default_rng(seed)
    top = np.concatenate([r.reshape(len(r), -1) for r in reference]).argmax(1)
    stable = np.ones(len(top), bool)
    for _ in range(NOISE_DRAWS):
        noisy = [{n: (a + rng.standard_normal(a.shape) * (float(a.max() - a.min()) / 255)).astype(a.dtype)
                  for n, a in feed.items()} for feed in feeds]
        got = run_batches(sess, noisy, output, batch)
        stable &= np.concatenate([g.reshape(len(g), -1) for g in got]).argmax(1) == top
    return stable


# from OBSERVED_MIN_ROWS pairs on, the top-1 drop that --max-drop bounds is the estimate's upper
# confidence bound (Wilson score interval, Z_BOUND standard errors): the budget's search keeps the
# fewest float blocks whose drop just meets the budget, so on a point estimate it stops where noise
# made a model look good. EfficientNet-Lite2 at 192-256@224, 40 held-out crops, --max-drop 0.03: the
# point estimate chose 2 blocks float at 0.021 (2 flips in 99 stable pairs), which flipped 7 of 135
# stable evaluation crops at 224 (docs/BENCHMARKS.md section 6, fourth run).
Z_BOUND = 1.0


def upper_bound(p: float, n: int, z: float = Z_BOUND) -> float:
    """The Wilson score upper bound of a rate ``p`` measured on ``n`` trials."""
    if n <= 0:
        return 1.0
    q = z * z / n
    return min(1.0, (p + q / 2 + z * float(np.sqrt(p * (1 - p) / n + q / (4 * n)))) / (1 + q))


@dataclass(frozen=True)
class Score:
    """A quantized model against FP32 on held-out feeds: ``drop`` under the metric (what --max-drop
    bounds), the observed metric drop (top-1: the counted flip fraction), the cosine drop and the
    point ``estimate`` of the drop (top-1: ``drop`` is its upper bound from OBSERVED_MIN_ROWS pairs on).
    ``at``: the input size whose own pairs gave the drop (top-1, see :meth:`Scorer.score`), or None
    where all pairs together did; ``observed`` and ``estimate`` are then that size's."""

    drop: float
    observed: float
    cosine: float
    estimate: float
    at: str | None = None

    @property
    def where(self) -> str:
        """' at HxW (the worst size)' when one size's pairs gave the drop, else ''."""
        return "" if self.at is None else f" at {self.at} (the worst size)"


def drop(metric: str, ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    """The drop (0 = identical) of ``got`` against ``ref`` under ``metric``."""
    if metric == "top1":
        agree = [np.argmax(r, axis=1) == np.argmax(g, axis=1) for r, g in zip(ref, got)]
        return float(1 - np.concatenate(agree).mean())
    if metric == "pixel":
        agree = [(np.argmax(r, axis=1) == np.argmax(g, axis=1)).reshape(len(r), -1).mean(1) for r, g in zip(ref, got)]
        return float(1 - np.concatenate(agree).mean())
    if metric == "cosine":
        cos = []
        for r, g in zip(ref, got):
            r2, g2 = r.reshape(len(r), -1).astype(np.float64), g.reshape(len(g), -1).astype(np.float64)
            den = np.linalg.norm(r2, axis=1) * np.linalg.norm(g2, axis=1)
            cos.append(np.where(den > 0, (r2 * g2).sum(1) / np.maximum(den, 1e-30), 1.0))
        return float(1 - np.concatenate(cos).mean())
    raise CalibrationError(f"accuracy metric {metric!r}: expected one of {', '.join(METRICS)}")


@dataclass
class Scorer:
    """FP32 reference outputs on held-out feeds, computed once; ``score(path)`` -> drop of a Q/DQ model."""

    feeds: list[dict[str, np.ndarray]]
    output: str
    metric: str
    reference: list[np.ndarray]
    threads: int | None = None
    batch: tuple[int, int] = (1, BATCH)
    stable: np.ndarray | None = None  # top1: the rows the drop is measured on (None: every row)

    # fewer stable rows than this (or than a quarter of all): the drop is measured on every row
    MIN_STABLE = 8

    @classmethod
    def make(cls, fp32_path, feeds, output: str, metric: str, threads: int | None = None,
             batch: tuple[int, int] = (1, BATCH)) -> Scorer:
        sess = session(fp32_path, threads)
        ref = run_batches(sess, feeds, output, batch)
        stable = None
        if metric == "top1":
            mask = stable_rows(sess, feeds, output, ref, batch)
            if mask.sum() >= max(cls.MIN_STABLE, len(mask) / 4):
                stable = mask
        return cls(list(feeds), output, metric, ref, threads, batch, stable)

    @property
    def rows(self) -> tuple[int, int]:
        """(rows the drop is measured on, all rows)."""
        total = sum(len(r) for r in self.reference)
        return (total if self.stable is None else int(self.stable.sum())), total

    def score(self, path) -> Score:
        """Score a Q/DQ model (a path), or anything with ONNX Runtime's ``run(names, feeds)``.

        Top-1: the drop is the worst of all pairs together and of each input size with at least
        OBSERVED_MIN_ROWS pairs of its own: a profile serves every size in its range, and a model that
        flips 5% at its max size and 1% elsewhere has not met a 3% budget there (EfficientNet-Lite2,
        192-256@224, 40 held-out crops, --max-drop 0.03, pairs of all sizes pooled: 2 flips in 187
        held-out pairs, then 3 of 135 and 5 of 128 stable evaluation crops at 224 and 256;
        docs/BENCHMARKS.md section 6, sixth run)."""
        sess = path if hasattr(path, "run") else session(path, self.threads)
        got = run_batches(sess, self.feeds, self.output, self.batch)
        cosine = drop("cosine", self.reference, got)
        if self.metric != "top1":
            d = drop(self.metric, self.reference, got)
            return Score(d, d, cosine, d)
        stable = self.stable if self.stable is not None else np.ones(self.rows[1], bool)
        r_all, g_all = np.concatenate(self.reference), np.concatenate(got)
        worst = _top1(r_all[stable], g_all[stable], cosine)
        if len(self.reference) > 1:
            ends = np.cumsum([len(r) for r in self.reference])
            for label, r, g, m in zip(self._sizes(), self.reference, got, np.split(stable, ends[:-1])):
                if m.sum() >= OBSERVED_MIN_ROWS:
                    size = _top1(r[m], g[m], cosine, label)
                    worst = size if size.drop > worst.drop else worst
        return worst

    def _sizes(self) -> list[str]:
        """A label per shape group of the feeds (the order run_batches returns them in): each input's
        HxW, joined by '/'."""
        return ["/".join("x".join(map(str, a.shape[-2:])) for _, a in sorted(group[0].items()))
                for group in group_by_shape(self.feeds)]


def _top1(ref: np.ndarray, got: np.ndarray, cosine: float, at: str | None = None) -> Score:
    """The top-1 Score of these rows (``cosine`` of all of them): from
    OBSERVED_MIN_ROWS rows on, the upper bound of the larger of the pooled and the observed flip rate."""
    observed = drop("top1", [ref], [got])
    estimate = bound = pooled_flip_rate([ref], [got])
    if len(ref) >= OBSERVED_MIN_ROWS:  # the count is fine-grained enough to be held to
        estimate = max(estimate, observed)
        bound = upper_bound(estimate, len(ref))
    return Score(bound, observed, cosine, estimate, at)


def latency(
    fp32_path: str | Path,
    int8_path: str | Path,
    feed: dict[str, np.ndarray],
    runs: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> dict:
    """Median latency (ms) of FP32 and INT8 on ``feed``, measured side by side (runs alternate)."""
    sessions = {"fp32": session(fp32_path, threads), "int8": session(int8_path, threads)}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(warmup):
        for s in sessions.values():
            s.run(None, feed)
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            times[k].append((time.perf_counter() - t0) * 1e3)
    fp32, int8 = statistics.median(times["fp32"]), statistics.median(times["int8"])
    shape = {k: list(v.shape) for k, v in feed.items()}
    return {"fp32_ms": round(fp32, 4), "int8_ms": round(int8, 4), "speedup": round(fp32 / int8, 3),
            "runs": runs, "shape": shape, "threads": threads}
