"""The builder's int8/auto step for one profile: calibrate the specialized model, pick the precision.

``mrdeploy.exporter.build`` calls :func:`quantize_for_build` from its ``_quantize_profile`` hook with the
FP32 model already specialized to the profile; this returns what the builder writes into the bundle.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mrdeploy._atomic import run_tempdir
from mrdeploy.calibration.api import ProfileCalibration, calibrate_profile
from mrdeploy.calibration.cache import sha256_file
from mrdeploy.errors import CalibrationError
from mrdeploy.runtime.profiles import Profile

DEFAULT_SAMPLES = 64
_DATA_CACHE: dict[tuple, object] = {}


def _identity(calib_data):
    """What the loaded set depends on: a folder's file list with sizes and mtimes, a file's size and mtime."""
    if not isinstance(calib_data, (str, os.PathLike)):
        return id(calib_data)
    path = Path(calib_data)
    if path.is_dir():
        from mrdeploy.calibration.sources import folder_fingerprint
        from mrdeploy.runtime.images import image_files

        files = image_files(path)
        return (os.fspath(path), folder_fingerprint(path, files))
    if path.is_file():
        st = path.stat()
        return (os.fspath(path), st.st_size, st.st_mtime_ns)
    return os.fspath(calib_data)


def _data(calib_data, samples: int, seed: int, channels: int):
    """Load the calibration set once per build (every profile uses the same items, at its own sizes)."""
    from mrdeploy.calibration.api import load_data

    key = (_identity(calib_data), samples, seed, channels)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_data(calib_data, samples, seed, None, channels)
    return _DATA_CACHE[key]


def quantize_for_build(
    source_path: str | Path,
    model,
    profile: Profile,
    *,
    precision: str,
    backend: str,
    calib_data,
    calib_method: str | None = "entropy",
    calib_samples: int | None = None,
    max_drop: float | None = None,
    seed: int = 0,
    threads: int | None = None,
):
    """-> (model, precision, calibration, measurements, cache_bytes) for the builder (see its hook)."""
    import onnx

    if calib_data is None:
        raise CalibrationError(
            f"precision {precision!r} needs INT8 calibration data: give --calib-data DIR|FILE.npz|module:callable "
            "(images at the sizes your inputs really have)"
        )
    samples = DEFAULT_SAMPLES if calib_samples is None else calib_samples  # 0 is refused, not replaced
    target = "tensorrt" if backend == "tensorrt" else "onnxruntime"
    channels = next(iter(profile.inputs.values())).opt[1]
    with tempfile.TemporaryDirectory(prefix="mrdeploy-int8-", dir=run_tempdir()) as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(fp32_path))
        result: ProfileCalibration = calibrate_profile(
            fp32_path, profile, _data(calib_data, samples, seed, channels),
            qdq_path=Path(tmp) / "int8.onnx", cache_path=Path(tmp) / "int8.calib",
            method=calib_method or "entropy", samples=samples, seed=seed, target=target, max_drop=max_drop,
            precision="auto" if precision == "auto" and backend == "onnxruntime" else "int8",
            threads=threads, source_fingerprint=sha256_file(source_path),
        )
        measurements = result.measurements
        if precision == "auto" and backend != "onnxruntime":
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
