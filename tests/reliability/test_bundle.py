"""Never read outside the bundle, and refuse manifests whose fields have the wrong type or meaning."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

import mrdeploy.runtime as rt
from mrdeploy.errors import BundleError
from mrdeploy.runtime.manifest import Manifest, verify_artifacts
from tests.bundles import make_bundle


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("pristine") / "b", "cls", profiles=["small=32-64@48", "large=96-160@128"])


@pytest.fixture
def bundle(pristine, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(pristine, out)
    return out


def _edit(bundle, change):
    path = bundle / "manifest.json"
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))
    return bundle


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("cache", ["/etc/passwd", "../../../../../../etc/passwd", "profiles/../../b2/x"])
def test_calibration_cache_outside_the_bundle_is_never_opened(bundle, cache):
    def change(d):
        d["profiles"][0]["calibration"] = {"cache": cache, "cache_sha256": _sha("/etc/passwd")}

    _edit(bundle, change)
    with pytest.raises(BundleError, match=r"profile 'small': calibration cache: expected a path inside the bundle") as e:
        rt.load(bundle)
    assert "has changed" not in str(e.value) and "got " + _sha("/etc/passwd") not in str(e.value)  # never hashed


def test_a_symlink_out_of_the_bundle_is_not_served(bundle, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(bundle / "profiles" / "small.onnx", outside)  # the same bytes: the hash would match
    (bundle / "profiles" / "small.onnx").unlink()
    os.symlink(outside, bundle / "profiles" / "small.onnx")
    with pytest.raises(BundleError, match=r"profile 'small': 'profiles/small.onnx' leads outside the bundle"):
        rt.load(bundle)
    cal = bundle / "profiles" / "small.calib"
    os.symlink("/etc/passwd", cal)
    _edit(bundle, lambda d: d["profiles"][1].__setitem__("calibration", {"cache": "profiles/small.calib",
                                                                          "cache_sha256": _sha("/etc/passwd")}))
    with pytest.raises(BundleError, match="leads outside the bundle"):
        verify_artifacts(bundle, Manifest.read(bundle), profiles=["large"])


def test_a_manifest_linked_from_outside_is_refused(bundle, tmp_path):
    real = tmp_path / "manifest.json"
    shutil.move(bundle / "manifest.json", real)
    os.symlink(real, bundle / "manifest.json")
    with pytest.raises(BundleError, match="manifest: 'manifest.json' leads outside the bundle"):
        rt.load(bundle)


def test_a_symlink_inside_the_bundle_is_fine_and_a_directory_is_not_a_file(bundle):
    (bundle / "profiles" / "small.onnx").rename(bundle / "profiles" / "real.onnx")
    os.symlink("real.onnx", bundle / "profiles" / "small.onnx")
    with rt.load(bundle) as r:
        assert r(np.zeros((1, 3, 48, 48), np.float32)).shape == (1, 5)
    (bundle / "profiles" / "large.onnx").unlink()
    (bundle / "profiles" / "large.onnx").mkdir()
    with pytest.raises(BundleError, match=r"profile 'large': artifact .*large.onnx is not a regular file"):
        rt.load(bundle)


BAD_FIELDS = [
    (lambda d: d.update(format_version=True), r"unknown format_version: expected 1, got True \(a bool, not an integer\)"),
    (lambda d: d.update(format_version=1.0), r"unknown format_version: expected 1, got 1.0 \(a float, not an integer\)"),
    (lambda d: d.update(format_version="1"), r"got '1' \(a str, not an integer\)"),
    (lambda d: d["profiles"][0]["inputs"]["input"].update(min=["1", "3", "32", "32"]),
     r"profile 'small': input 'input' min: expected 4 positive integers \(N, C, H, W\), got \['1', '3', '32', '32'\]"),
    (lambda d: d["profiles"][0].update(sha256=None), r"profile 'small': sha256: expected a sha256 \(64 lowercase hex digits\), got None"),
    (lambda d: d["source"].update(sha256=12), r"source sha256: expected a sha256"),
    (lambda d: d["model"].update(inputs=[]), r"model inputs: expected a non-empty list of inputs, got \[\]"),
    (lambda d: d["profiles"][0]["inputs"]["input"].update(min=[1, 3, 80, 80]),
     r"profile 'small': input 'input': expected min <= opt <= max on every axis, got min \(1, 3, 80, 80\)"),
    (lambda d: d["profiles"].append(dict(d["profiles"][0], name="again")),
     r"profiles 'small' and 'again' are the same profile \(same shapes, backend and precision\)"),
    (lambda d: d["profiles"].append(dict(d["profiles"][0])), r"profile name 'small' appears twice"),
    (lambda d: d["profiles"][0].update(options=[1, 2]), r"profile 'small': options: expected an object, got list"),
    (lambda d: d["model"]["inputs"][0].update(mean=[0.5]), r"model input 0 mean: expected 3 numbers or null"),
    (lambda d: d["model"]["inputs"][0].update(channels="3"), r"model input 0 channels: expected an integer >= 1, got '3'"),
    (lambda d: d["model"].update(task="detection"), r"model task: expected one of classification, segmentation, dense"),
    (lambda d: d["build"].update(timing_cache={"artifact": "/etc/passwd", "sha256": "0" * 64}),
     r"build timing_cache artifact: expected a path inside the bundle, got '/etc/passwd'"),
]


@pytest.mark.parametrize("change, message", BAD_FIELDS)
def test_malformed_fields_are_refused_with_a_message(bundle, cli, change, message):
    _edit(bundle, change)
    with pytest.raises(BundleError, match=message):
        rt.load(bundle)
    code, out, err = cli("run", bundle, "x.npy")
    assert code == 1 and err.startswith("mrdeploy: error: ") and "Traceback" not in err


def test_random_bytes_as_manifest(bundle, cli):
    (bundle / "manifest.json").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(BundleError, match=r"manifest.json: not valid JSON .*the file is corrupt or truncated"):
        rt.load(bundle)
    code, _, err = cli("inspect", bundle)
    assert code == 1 and "not valid JSON" in err and "Traceback" not in err


def test_policy_defaults_by_task_when_the_manifest_has_none(bundle):
    _edit(bundle, lambda d: d.pop("policy"))
    assert Manifest.read(bundle).policy == "resize"  # a classifier: resize, never pad
    _edit(bundle, lambda d: d["model"].update(task="segmentation"))
    assert Manifest.read(bundle).policy == "pad"
