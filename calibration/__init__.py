"""Calibration data, INT8 (Q/DQ) quantization per resolution profile, calibration caches.

``calibrate(model, profiles, data, output_dir=...)`` calibrates every profile at that profile's own
sizes; ``calibrate_profile`` does one (the builder's int8/auto hook). See calibration/api.py.
"""

from mrdeploy.calibration.api import (
    CalibrationResult,
    ProfileCalibration,
    calibrate,
    calibrate_profile,
    resolve_profiles,
)
from mrdeploy.calibration.cache import load_cache, read_trt_cache
from mrdeploy.calibration.qdq import targets
from mrdeploy.calibration.ranges import METHODS
from mrdeploy.calibration.sources import CalibrationSet, load_data

__all__ = [
    "METHODS",
    "CalibrationResult",
    "CalibrationSet",
    "ProfileCalibration",
    "calibrate",
    "calibrate_profile",
    "load_cache",
    "load_data",
    "read_trt_cache",
    "targets",
    "resolve_profiles",
]
