"""Calibration data, INT8 (Q/DQ) quantization per profile, calibration caches."""
