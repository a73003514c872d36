"""The builder's int8/auto step for one profile: calibrate the specialized model, pick the precision.

``mrdeploy.exporter.build`` calls :func:`quantize_for_build` with the FP32 model already specialized to
the profile (and checked against the source); this returns what the builder writes into the bundle.
The calibration options travel as one :class:`CalibOptions`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mrdeploy._atomic import run_tempdir
from mrdeploy.calibration.api import (
    DEFAULT_METHOD,
    DEFAULT_SAMPLES,
    ProfileCalibration,
    calibrate_profile,
    check_max_drop,
)
from mrdeploy.calibration.sources import load_data
from mrdeploy.errors import BudgetError, CalibrationError, first_line
from mrdeploy.runtime.manifest import sha256_file
from mrdeploy.runtime.profiles import Profile

__all__ = ["DEFAULT_METHOD", "DEFAULT_SAMPLES", "CalibOptions", "quantize_for_build"]


@dataclass(frozen=True)
class CalibOptions:
    """What ``build-engine`` calibrates INT8 profiles with: ``data`` (a folder, .npy/.npz or
    module:callable), ``heldout`` (separate held-out data for the budget, else part of ``data``),
    ``method``, ``samples`` per profile, ``max_drop`` (the budget), ``seed``, ``threads``,
    ``bias_correction`` (calibration/bias.py)."""

    data: object = None
    heldout: object = None
    method: str = DEFAULT_METHOD
    samples: int = DEFAULT_SAMPLES
    max_drop: float | None = None
    seed: int = 0
    threads: int | None = None
    bias_correction: bool = True

    def __post_init__(self):
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise CalibrationError(f"--calib-samples must be at least 1, got {self.samples!r}")
        check_max_drop(self.max_drop)


# The last calibration set loaded, with what it was loaded from: every profile of a build uses the same
# items (at its own sizes). Data given as an object (a callable, arrays) is matched by identity while the
# entry holds it, so its id cannot be reused by another object.
_DATA_CACHE: dict[str, object] = {}


def _identity(data):
    """What the loaded set depends on: a folder's file list with sizes and mtimes, a file's size and mtime;
    an object stands for itself."""
    if data is None or not isinstance(data, (str, os.PathLike)):
        return data
    path = Path(data)
    if path.is_dir():
        from mrdeploy.calibration.sources import folder_fingerprint
        from mrdeploy.runtime.images import image_files

        files = image_files(path)
        return (os.fspath(path), folder_fingerprint(path, files))
    if path.is_file():
        st = path.stat()
        return (os.fspath(path), st.st_size, st.st_mtime_ns)
    return os.fspath(data)


def _same(a, b) -> bool:
    if isinstance(a, tuple | str) and isinstance(b, tuple | str):
        return a == b
    return a is b


def _data(options: CalibOptions, channels: int):
    """Load the calibration set once per build (every profile uses the same items, at its own sizes)."""
    key = (_identity(options.data), _identity(options.heldout))
    rest = (options.samples, options.seed, channels, options.max_drop is not None)
    cached = _DATA_CACHE.get("key")
    if cached is None or cached[1] != rest or not all(_same(a, b) for a, b in zip(cached[0], key)):
        _DATA_CACHE.clear()
        loaded = load_data(options.data, options.samples, options.seed, options.heldout, channels,
                           need_heldout=options.max_drop is not None)
        _DATA_CACHE.update(key=(key, rest), set=loaded)
    return _DATA_CACHE["set"]


def quantize_for_build(source_path: str | Path, model, profile: Profile, *, precision: str, backend: str,
                       options: CalibOptions):
    """-> (model, precision, calibration, measurements, cache_bytes) for the builder. Held-out outputs
    are compared with the source model at ``source_path``, not with the specialized one."""
    import onnx

    if options.data is None:
        raise CalibrationError(
            f"precision {precision!r} needs INT8 calibration data: give --calib-data DIR|FILE.npz|module:callable "
            "(images at the sizes your inputs really have)"
        )
    from mrdeploy.runtime.backends.registry import get_backend

    target = backend  # the backend's qdq_activations pick the activation scheme (calibration/qdq.py)
    measured = get_backend(backend).auto_measured  # auto: calibration times fp32 against int8 with ORT
    channels = next(iter(profile.inputs.values())).opt[1]
    with tempfile.TemporaryDirectory(prefix="mrdeploy-int8-", dir=run_tempdir()) as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(fp32_path))
        try:
            result: ProfileCalibration = calibrate_profile(
                fp32_path, profile, _data(options, channels),
                qdq_path=Path(tmp) / "int8.onnx", cache_path=Path(tmp) / "int8.calib",
                method=options.method, samples=options.samples, seed=options.seed, target=target,
                max_drop=options.max_drop,
                precision="auto" if precision == "auto" and measured else "int8",
                threads=options.threads, source_fingerprint=sha256_file(source_path), reference_path=source_path,
                bias_correction=options.bias_correction,
            )
        except BudgetError as e:
            if precision != "auto":
                raise
            # --precision auto picks the fastest precision within the budget: where no INT8 model meets
            # it, the profile is served in fp32 (which the builder checks against the source)
            reason = f"no INT8 model within the budget: {first_line(e)}"
            return model, "fp32", None, {"choice": "fp32", "reason": reason}, None
        measurements = result.measurements
        if precision == "auto" and not measured:
            measurements = {"choice": "int8", "reason": f"{backend}: INT8 within the budget; not timed on this machine"}
        calibration = result.to_dict()
        calibration.pop("cache", None)
        calibration.pop("cache_sha256", None)
        calibration["specialized_fingerprint"] = sha256_file(fp32_path)
        if result.precision == "fp32":
            measurements = dict(measurements or {}, calibration=calibration)
            return model, "fp32", None, measurements, None
        qdq = onnx.load(str(result.qdq_path))
        del qdq.metadata_props[:]
        qdq.metadata_props.extend(model.metadata_props)
        cache_bytes = result.cache_path.read_bytes() if result.cache_path else None
        return qdq, "int8", calibration, measurements, cache_bytes
