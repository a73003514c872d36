"""Calibration caches: TensorRT's text format plus a JSON record of where the ranges came from.

``<profile>.calib`` is what TensorRT's ``IInt8Calibrator.read_calibration_cache`` reads: a header line
``TRT-<version>-<algorithm>`` and one ``tensor_name: <hex>`` line per tensor, where hex is the IEEE-754
bit pattern of the float32 scale ``amax / 127``. ``<profile>.calib.json`` beside it records the
fingerprints of the source model and the calibration data, the settings and the ranges; a cache whose
fingerprints do not match the model and data at hand is refused (CalibrationError naming both), so a
changed model or dataset is never served stale ranges.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

from mrdeploy._atomic import write_text_atomic
from mrdeploy.errors import CalibrationError
from mrdeploy.runtime.manifest import sha256_file  # the one copy (re-exported here)

TRT_CACHE_VERSION = "101601"  # TensorRT 10.16.1, the newest 10.x the project builds against
ALGORITHMS = {"minmax": "MinMaxCalibration", "entropy": "EntropyCalibration2", "percentile": "EntropyCalibration2"}
RECORD_VERSION = 1


def float_to_hex(value: float) -> str:
    return format(struct.unpack(">I", struct.pack(">f", value))[0], "08x")


def hex_to_float(text: str) -> float:
    return struct.unpack(">f", struct.pack(">I", int(text, 16)))[0]


def trt_cache_text(amax: Mapping[str, float], method: str) -> str:
    lines = [f"TRT-{TRT_CACHE_VERSION}-{ALGORITHMS[method]}"]
    for name in sorted(amax):
        scale = max(amax[name], 1e-12) / 127.0
        lines.append(f"{name}: {float_to_hex(scale)}")
    return "\n".join(lines) + "\n"


def read_trt_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}) from a TensorRT calibration cache."""
    lines = Path(path).read_text().splitlines()
    if not lines or not lines[0].startswith("TRT-"):
        raise CalibrationError(f"{path} is not a TensorRT calibration cache: expected a 'TRT-<ver>-<algo>' "
                               f"header, got {lines[0][:40]!r}" if lines else f"{path} is empty")
    scales = {}
    for i, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        if not sep:
            raise CalibrationError(f"{path}:{i}: expected 'tensor: hex', got {line[:60]!r}")
        scales[name] = hex_to_float(value)
    return lines[0], scales


def write_cache(path: str | Path, amax: Mapping[str, float], record: Mapping) -> tuple[Path, Path]:
    """Write ``path`` (TensorRT text cache) and ``path.json`` (fingerprints, settings, ranges)."""
    path = Path(path)
    record_path = path.with_name(path.name + ".json")
    write_text_atomic(path, trt_cache_text(amax, record["method"]))
    body = dict(record, format="mrdeploy-calibration-record", format_version=RECORD_VERSION,
                cache=path.name, cache_sha256=sha256_file(path))
    write_text_atomic(record_path, json.dumps(body, indent=1, sort_keys=True) + "\n")
    return path, record_path


def load_cache(path: str | Path, source_fingerprint: str | None = None, data_fingerprint: str | None = None) -> dict:
    """The record of cache ``path``; CalibrationError when a given fingerprint differs from the recorded one,
    when the record is missing, or when the cache file changed since it was written."""
    path = Path(path)
    record_path = path.with_name(path.name + ".json")
    if not path.is_file():
        raise CalibrationError(f"calibration cache {path} does not exist")
    if not record_path.is_file():
        raise CalibrationError(f"calibration cache {path} has no record {record_path.name}: "
                               "cannot tell which model and data it was made from; recalibrate")
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError as e:
        raise CalibrationError(f"calibration record {record_path} is not valid JSON: {e}") from e
    got = sha256_file(path)
    if record.get("cache_sha256") != got:
        raise CalibrationError(f"calibration cache {path} changed since it was written: "
                               f"recorded sha256 {record.get('cache_sha256')}, file has {got}")
    for what, expected in (("source model", source_fingerprint), ("calibration data", data_fingerprint)):
        key = "source_fingerprint" if what == "source model" else "data_fingerprint"
        if expected is not None and record.get(key) != expected:
            raise CalibrationError(
                f"calibration cache {path} is stale: it was made from a {what} with fingerprint "
                f"{record.get(key)}, but the {what} now has fingerprint {expected}; recalibrate"
            )
    return record
