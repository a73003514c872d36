"""Activation ranges per calibration method, over samples of mixed sizes.

ONNX Runtime's histogram calibrators (entropy, percentile) stack every collected tensor into one array,
so a run that mixes input sizes fails. We create one calibrator (one augmented model), feed it one
shape group at a time in small batches, and let its collector merge ranges and histograms across
calls; then ``compute_data`` gives the method's ranges over all sizes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mrdeploy._atomic import run_tempdir
from mrdeploy._progress import Progress
from mrdeploy.calibration.preprocess import chunks, group_by_shape
from mrdeploy.errors import CalibrationError

METHODS = ("minmax", "entropy", "percentile")
CHUNK = 8  # samples per collect call: histogram calibrators keep every intermediate tensor of a call


class _Reader:
    """A CalibrationDataReader over a list of batch feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    try:
        return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}[method]
    except KeyError:
        raise CalibrationError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}") from None


def compute_ranges(
    model_path: str | Path,
    feeds: Sequence[dict[str, np.ndarray]],
    method: str = "minmax",
    op_types: Sequence[str] | None = None,
    symmetric: bool = False,
    percentile: float = 99.99,
    desc: str = "calibrating",
    batch: tuple[int, int] = (1, CHUNK),
):
    """Ranges (onnxruntime TensorsData) of the inputs/outputs of ``op_types`` nodes over ``feeds``
    (per-sample dicts of C, H, W arrays; sizes may differ).

    Histogram methods first take every tensor's absolute maximum over all samples (a MinMax pass), then
    histogram every shape group on that one fixed range: onnxruntime's collector otherwise widens a
    histogram by adding bins when a later group has larger values, and its entropy search only looks at
    the first ``num_bins`` of them, which clips the ranges of mixed-size calibrations."""
    if op_types is None:
        from mrdeploy.calibration.graph import quantize_op_types

        op_types = quantize_op_types()
    if not 0 < percentile <= 100:
        raise CalibrationError(f"--percentile must be in (0, 100], got {percentile}")
    runs = [feed for g in group_by_shape(feeds) for feed, _ in chunks(g, batch, CHUNK)]
    if method == "minmax":
        return _collect(model_path, runs, "minmax", op_types, {"symmetric": symmetric}, desc)
    absmax = _collect(model_path, runs, "minmax", op_types, {"symmetric": True}, f"{desc} (range)")
    extra = {"symmetric": symmetric, "num_bins": HISTOGRAM_BINS[method]}
    if method == "percentile":
        extra["percentile"] = percentile
    return _collect(model_path, runs, method, op_types, extra, desc, absmax)


HISTOGRAM_BINS = {"entropy": 512, "percentile": 2048}  # entropy: thresholds from 1/4 of the range up


def _seed_histograms(calibrator, absmax) -> None:
    """Give the calibrator's collector an empty histogram per tensor over [-absmax, absmax] (or
    [0, absmax] for absolute-value histograms), so every merge keeps the same bins."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    c = HistogramCollector(
        method=calibrator.method, symmetric=calibrator.symmetric, num_bins=calibrator.num_bins,
        num_quantized_bins=calibrator.num_quantized_bins, percentile=calibrator.percentile,
        scenario=calibrator.scenario,
    )
    absolute = c.method == "percentile" and c.symmetric
    for name, td in absmax.data.items():
        t = np.float32(max(float(np.max(np.abs(np.asarray(td.range_value[1])))), 1e-12))
        hist = np.zeros(c.num_bins, dtype=np.int64)
        if absolute:
            edges = np.linspace(0, t, c.num_bins + 1).astype(np.float32)
            c.histogram_dict[name] = (hist, edges, np.float32(t), np.float32(-t))
        else:
            edges = np.linspace(-t, t, c.num_bins + 1).astype(np.float32)
            c.histogram_dict[name] = (hist, edges, np.float32(t), np.float32(-t), t)
    calibrator.collector = c


def _collect(model_path, runs, method, op_types, extra, desc, absmax=None):
    from onnxruntime.quantization.calibrate import create_calibrator

    with tempfile.TemporaryDirectory(prefix="mrdeploy-calib-", dir=run_tempdir()) as tmp:
        calibrator = create_calibrator(
            Path(model_path), list(op_types), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=ort_method(method), extra_options=extra,
        )
        try:
            if absmax is not None:
                _seed_histograms(calibrator, absmax)
            with Progress(len(runs), desc) as bar, _quiet_ort():
                for chunk in runs:
                    calibrator.collect_data(_Reader([chunk]))
                    shape = next(iter(chunk.values())).shape
                    bar.update(1, note=f"{shape[-2]}x{shape[-1]}")
                ranges = calibrator.compute_data()
        finally:
            del calibrator
    return ranges


@contextlib.contextmanager
def _quiet_ort():
    """ORT's collectors print to stdout and log warnings; keep the CLI's output ours."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def amax(ranges) -> dict[str, float]:
    """Symmetric absolute maximum per tensor (what a TensorRT calibration cache stores, as amax/127)."""
    out = {}
    for name, td in ranges.data.items():
        lo, hi = (np.asarray(v, dtype=np.float64) for v in td.range_value)
        out[name] = float(max(np.abs(lo).max(), np.abs(hi).max()))
    return out


def to_jsonable(ranges) -> dict[str, list[float]]:
    out = {}
    for name, td in ranges.data.items():
        lo, hi = (np.asarray(v, dtype=np.float64) for v in td.range_value)
        out[name] = [float(lo.min()), float(hi.max())]
    return out
