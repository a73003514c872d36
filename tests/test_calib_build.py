"""build-engine --precision int8 | auto through the calibration hook: bundles that record how they were
calibrated, serve through the runtime, and refuse budgets no INT8 model meets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mrdeploy.calibration.cache import read_trt_cache, sha256_file
from mrdeploy.errors import CalibrationError


@pytest.fixture(scope="module")
def digits_png(tmp_path_factory) -> Path:
    from examples.data import write_image_folder

    root = tmp_path_factory.mktemp("calib_digits")
    write_image_folder(root, n=24, sizes=[(48, 48), (64, 64), (40, 56)], kind="digits", seed=2)
    return root


def test_int8_bundle_records_calibration_and_serves(exported, digits_png, tmp_path):
    from mrdeploy.exporter.build import build_engine
    from mrdeploy.runtime import load
    from mrdeploy.runtime.manifest import Manifest, verify_artifacts

    model = exported("cnn")
    path = build_engine(model, tmp_path / "b", ["s=32-48@48", "m=64"], precision="int8", calib_data=digits_png,
                        calib_method="minmax", calib_samples=6, quiet=True)
    path = Path(getattr(path, "path", path))
    manifest = Manifest.read(path)
    verify_artifacts(path, manifest)
    assert [e.precision for e in manifest.profiles] == ["int8", "int8"]
    for e in manifest.profiles:
        c = e.calibration
        assert c["method"] == "minmax" and c["samples"] == 6 and c["target"] == "onnxruntime"
        assert c["source_fingerprint"] == sha256_file(model)
        assert len(c["data_fingerprint"]) == 64 and c["heldout"] == 18  # the 18 images calibration did not use
        assert c["cache"] == f"profiles/{e.profile.name}.calib"
        assert c["cache_sha256"] == sha256_file(path / c["cache"])
        header, scales = read_trt_cache(path / c["cache"])
        assert header.startswith("TRT-") and len(scales) > 10
        assert c["drop"] is not None and 0 <= c["drop"] <= 0.2
    assert manifest.profiles[0].calibration["sizes"][:1] == ["32x32"]
    runner = load(path)
    x = np.random.default_rng(0).standard_normal((1, 3, 40, 40)).astype(np.float32)
    out = runner.run({"input": x})
    assert next(iter(out.values())).shape == (1, 10)
    assert runner.last_decision.profile.name == "s"


def test_auto_records_measurements(exported, digits_png, tmp_path):
    from mrdeploy.exporter.build import build_engine
    from mrdeploy.runtime.manifest import Manifest

    build_engine(exported("cnn"), tmp_path / "b", ["s=48"], precision="auto", calib_data=digits_png,
                 calib_method="percentile", calib_samples=4, max_drop=0.5, quiet=True)
    e = Manifest.read(tmp_path / "b").profiles[0]
    m = e.measurements
    assert m["choice"] == e.precision and e.precision in ("int8", "fp32")
    assert m["fp32_ms"] > 0 and m["int8_ms"] > 0 and m["shape"] == {"input": [1, 3, 48, 48]}
    assert (e.precision == "int8") == (m["speedup"] >= m["min_speedup"] == 1.05)
    if e.precision == "int8":
        assert e.calibration["method"] == "percentile" and e.calibration["max_drop"] == 0.5
    else:
        assert e.calibration is None and m["calibration"]["method"] == "percentile"


def test_int8_build_without_data_or_within_an_impossible_budget(exported, digits_png, tmp_path, monkeypatch):
    from mrdeploy.exporter.build import build_engine

    with pytest.raises(CalibrationError, match="precision 'int8' needs INT8 calibration data: give --calib-data"):
        build_engine(exported("cnn"), tmp_path / "a", ["48"], precision="int8")
    assert not (tmp_path / "a").exists()
    # pixel/top-1 budgets can be met by luck on few samples; cosine 0 cannot with any INT8 node
    from mrdeploy.calibration import build_hook

    orig = build_hook.calibrate_profile

    def cosine(*a, **kw):
        return orig(*a, **{**kw, "metric": "cosine"})

    monkeypatch.setattr(build_hook, "calibrate_profile", cosine)
    with pytest.raises(CalibrationError, match="cannot be met by any INT8 model"):
        build_engine(exported("cnn"), tmp_path / "b", ["48"], precision="int8", calib_data=digits_png,
                     calib_samples=3, max_drop=0.0, calib_method="minmax", quiet=True)
    assert not (tmp_path / "b").exists()


def test_precision_auto_serves_fp32_where_no_int8_model_meets_the_budget(exported, digits_png, tmp_path, monkeypatch):
    from mrdeploy.calibration import build_hook
    from mrdeploy.exporter.build import build_bundle
    from mrdeploy.runtime.manifest import Manifest

    orig = build_hook.calibrate_profile
    monkeypatch.setattr(build_hook, "calibrate_profile", lambda *a, **kw: orig(*a, **{**kw, "metric": "cosine"}))
    result = build_bundle(exported("cnn"), tmp_path / "b", ["s=48"], precision="auto", calib_data=digits_png,
                          calib_samples=3, max_drop=0.0, calib_method="minmax", quiet=True)
    e = Manifest.read(tmp_path / "b").profiles[0]
    assert (e.precision, e.calibration) == ("fp32", None)
    assert e.measurements["choice"] == "fp32"
    assert e.measurements["reason"].startswith("no INT8 model within the budget: profile s: --max-drop 0.0 (cosine) "
                                               "cannot be met by any INT8 model")
    assert any(n.startswith("s: precision auto chose fp32: no INT8 model within the budget: ") for n in result.notes)
    from mrdeploy.inspection import format_inspection, inspect_bundle

    assert "precision auto: fp32: no INT8 model within the budget: profile s:" in format_inspection(
        inspect_bundle(tmp_path / "b"))
