"""The bundle manifest: round trip, validation messages, artifact hashes, TensorRT compatibility."""

from __future__ import annotations

import json
import shutil

import pytest

from mrdeploy.errors import BundleError
from mrdeploy.runtime.manifest import (
    FORMAT_VERSION,
    Manifest,
    ProfileEntry,
    check_tensorrt_compat,
    sha256_file,
    verify_artifacts,
)
from mrdeploy.runtime.profiles import make_profile, parse_profile
from tests.bundles import make_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("m") / "cls", "cls")


def _copy(bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    return out


def _edit(path, fn):
    m = path / "manifest.json"
    d = json.loads(m.read_text())
    fn(d)
    m.write_text(json.dumps(d))


def test_round_trip(bundle, tmp_path):
    m = Manifest.read(bundle)
    assert m.format_version == FORMAT_VERSION == 1
    assert [e.name for e in m.profiles] == ["small", "large", "s224"]
    assert m.profiles[1].profile.inputs["input"].opt == (1, 3, 128, 128)
    assert m.model.labels[2] == "cat" and m.model.inputs[0].mean == (0.485, 0.456, 0.406)
    m.write(tmp_path)
    assert Manifest.read(tmp_path / "manifest.json").to_dict() == m.to_dict()
    raw = json.loads((bundle / "manifest.json").read_text())
    assert raw["format"] == "mrdeploy-bundle"
    assert set(raw["profiles"][0]) >= {"name", "inputs", "backend", "precision", "artifact", "sha256", "options"}
    verify_artifacts(bundle, m)  # nothing raised: every hash matches


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format_version=2), "unknown format_version: expected 1, got 2"),
        (lambda d: d.update(format="other"), "unknown format: expected 'mrdeploy-bundle', got 'other'"),
        (lambda d: d.pop("profiles"), "missing profiles"),
        (lambda d: d.update(policy="crop"), "unknown policy 'crop', expected one of pad, resize, letterbox, error"),
        (lambda d: d["profiles"][0].update(backend="tflite"), "profile 'small': unknown backend 'tflite'"),
        (lambda d: d["profiles"][0].update(precision="int4"), "unknown precision 'int4'"),
        (lambda d: d["profiles"][0].update(artifact="../x.onnx"), "expected a path inside the bundle, got '../x.onnx'"),
        (lambda d: d["profiles"][1].update(name="small"), "profile name 'small' appears twice"),
        (lambda d: d["profiles"][0].pop("sha256"), "profile 'small' is missing sha256"),
    ],
)
def test_bad_manifest(bundle, tmp_path, edit, message):
    b = _copy(bundle, tmp_path)
    _edit(b, edit)
    with pytest.raises(BundleError) as e:
        Manifest.read(b)
    assert message in str(e.value)
    assert "manifest.json" in str(e.value)


def test_not_a_bundle(tmp_path, bundle):
    with pytest.raises(BundleError, match="no such bundle directory"):
        Manifest.read(tmp_path / "nope")
    with pytest.raises(BundleError, match="expected manifest.json in it"):
        Manifest.read(tmp_path)
    with pytest.raises(BundleError, match="got a file .an ONNX model"):
        Manifest.read(bundle / "model.onnx")
    b = _copy(bundle, tmp_path)
    text = (b / "manifest.json").read_text()
    (b / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match="not valid JSON .* corrupt or truncated"):
        Manifest.read(b)


def test_missing_artifact_and_sha_mismatch(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    m = Manifest.read(b)
    (b / "profiles" / "large.onnx").unlink()
    with pytest.raises(BundleError) as e:
        verify_artifacts(b, m)
    assert "profile 'large'" in str(e.value) and "large.onnx is missing" in str(e.value)

    b2 = _copy(bundle, tmp_path / "2")
    art = b2 / "profiles" / "small.onnx"
    art.write_bytes(art.read_bytes()[:-10])
    with pytest.raises(BundleError) as e:
        verify_artifacts(b2, m)
    msg = str(e.value)
    assert f"expected sha256 {m.entry('small').sha256}, got {sha256_file(art)}" in msg
    assert "small.onnx has changed" in msg
    # only the named profiles are checked
    verify_artifacts(b2, m, profiles=["large", "s224"])


def test_calibration_cache_is_verified(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    (b / "profiles" / "small.calib").write_bytes(b"cache")
    _edit(b, lambda d: d["profiles"][0].update(
        calibration={"method": "minmax", "cache": "profiles/small.calib", "cache_sha256": "0" * 64}))
    with pytest.raises(BundleError, match="profile 'small' calibration cache: artifact .*small.calib has changed"):
        verify_artifacts(b, Manifest.read(b))


def _trt_entry(**options):
    p = make_profile(parse_profile("small=96-160@128"), {"input": 3})
    return ProfileEntry(p, "tensorrt", "fp16", "profiles/small.plan", "0" * 64, options=options)


def test_tensorrt_version_mismatch():
    e = _trt_entry(tensorrt_version="10.16.1.11", compute_capability="8.6", gpu="NVIDIA A10")
    check_tensorrt_compat(e, {}, "10.16.1.11", "8.6")
    with pytest.raises(BundleError) as err:
        check_tensorrt_compat(e, {}, "11.4.0.106", "8.6")
    msg = str(err.value)
    assert "profile 'small'" in msg and "built for TensorRT 10.16.1.11, got TensorRT 11.4.0.106" in msg
    with pytest.raises(BundleError, match="built for TensorRT 10.16.1.11, got TensorRT 10.16.0"):
        check_tensorrt_compat(e, {}, "10.16.0", "8.6")


def test_tensorrt_version_compatible_plans():
    e = _trt_entry(tensorrt_version="10.8.0", compute_capability="8.6", version_compatible=True)
    check_tensorrt_compat(e, {}, "10.16.1.11", "8.6")  # newer runtime, same major: fine
    with pytest.raises(BundleError, match=r"TensorRT 10.x >= 10.8.0 \(built version-compatible\), got TensorRT 10.7.0"):
        check_tensorrt_compat(e, {}, "10.7.0", "8.6")
    with pytest.raises(BundleError, match="got TensorRT 11.4.0"):
        check_tensorrt_compat(e, {}, "11.4.0", "8.6")


def test_tensorrt_gpu_mismatch():
    e = _trt_entry(tensorrt_version="10.16.1.11", compute_capability="8.6", gpu="NVIDIA A10")
    with pytest.raises(BundleError) as err:
        check_tensorrt_compat(e, {}, "10.16.1.11", "8.9", gpu="NVIDIA L4")
    msg = str(err.value)
    assert "built for compute capability 8.6 (NVIDIA A10), got compute capability 8.9 (NVIDIA L4)" in msg
    assert "profile 'small' (profiles/small.plan)" in msg
    hw = _trt_entry(tensorrt_version="10.16.1.11", compute_capability="8.6", hardware_compatibility="ampere_plus")
    check_tensorrt_compat(hw, {}, "10.16.1.11", "8.9")
    with pytest.raises(BundleError, match=r"Ampere or newer \(compute capability >= 8.0\), got compute capability 7.5"):
        check_tensorrt_compat(hw, {}, "10.16.1.11", "7.5")


def test_tensorrt_falls_back_to_build_block_and_requires_versions():
    e = _trt_entry()
    build = {"tensorrt": "11.4.0.106", "compute_capability": "9.0", "gpu": "H100"}
    check_tensorrt_compat(e, build, "11.4.0.106", "9.0")
    with pytest.raises(BundleError, match=r"compute capability 9.0 \(H100\), got compute capability 8.0"):
        check_tensorrt_compat(e, build, "11.4.0.106", "8.0")
    with pytest.raises(BundleError, match="does not record the TensorRT version"):
        check_tensorrt_compat(e, {}, "11.4.0.106", "9.0")
