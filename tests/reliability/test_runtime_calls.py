"""The Runner and the CLI: one message and a non-zero exit for every bad call, never a traceback;
nothing accepted that should not be."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import mrdeploy.runtime as rt
from mrdeploy.errors import BundleError, ExportError, InputError, ProfileError
from tests.bundles import make_bundle, make_model


@pytest.fixture(scope="module")
def cls_bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("rc") / "b", "cls")


def test_select_and_load_refuse_what_is_not_a_shape_or_a_path(cls_bundle):
    with rt.load(cls_bundle) as r:
        with pytest.raises(InputError, match=r"select\(batch, h, w\): expected three integers, got \('a', 96, 96\)"):
            r.select("a", 96, 96)
        with pytest.raises(InputError, match=r"select: input 'input': expected a shape of integers, got \(1, 3, 'x', 4\)"):
            r.select({"input": (1, 3, "x", 4)})
        assert r.select(1, 48, 48).profile.name == "small"
    with pytest.raises(BundleError, match="load: expected a bundle directory path, got None"):
        rt.load(None)
    with pytest.raises(InputError, match="threads must be a non-negative integer .* got -1"):
        rt.load(cls_bundle, threads=-1)


def test_an_artifact_replaced_after_load_is_not_served(cls_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(cls_bundle, b)
    r = rt.load(b)  # hashes checked here
    make_model(tmp_path / "other.onnx", "cls", seed=7)
    shutil.copyfile(tmp_path / "other.onnx", b / "profiles" / "small.onnx")  # swapped before the engine loads
    with pytest.raises(BundleError, match=r"profile 'small': artifact .*small.onnx has changed: expected sha256"):
        r(np.zeros((1, 3, 48, 48), np.float32))
    assert r(np.zeros((1, 3, 128, 128), np.float32)).shape == (1, 5)  # the untouched profile still serves
    r.close()


def test_huge_finite_inputs_giving_nan_outputs_name_the_profile(cls_bundle):
    with rt.load(cls_bundle) as r:
        x = np.full((1, 3, 48, 48), 1e38, np.float32)
        x[..., ::2] = -1e38
        with pytest.raises(InputError, match=r"profile 'small' \(onnxruntime, fp32\) gave \d+ NaN/Inf of 5 values in "
                                             r"output 'logits' for a finite input \(largest \|value\| 1e\+38\)"):
            r(x)
        with pytest.raises(InputError, match="profile 'small' .* NaN/Inf"):
            r.run_profile("small", x)


@pytest.mark.parametrize("args, message", [
    (["--top-k", "0"], "Invalid value for '--top-k': 0 is not in the range x>=1"),
    (["--repeat", "0"], "Invalid value for '--repeat': 0 is not in the range x>=1"),
    (["--threads", "-1"], "Invalid value for '--threads': -1 is not in the range x>=1"),
    (["--max-loaded", "0"], "Invalid value for '--max-loaded': 0 is not in the range x>=1"),
])
def test_run_counts_out_of_range(cls_bundle, tmp_path, cli, args, message):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 48, 48), np.float32))
    code, out, err = cli("run", cls_bundle, tmp_path / "x.npy", *args)
    assert code == 2 and message in err and "Traceback" not in err and out == ""


@pytest.fixture(scope="module")
def div8(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("d8") / "d8.onnx", "cls", divisor=8)


def test_build_engine_arguments(div8, tmp_path, cli):
    out = tmp_path / "b"
    code, _, err = cli("build-engine", div8, "-o", out, "--profile", "48", "--divisor", "3", "-q")
    assert code == 1 and "--divisor 3 conflicts with" in err and "takes only multiples of 8" in err
    assert not out.exists()
    assert cli("build-engine", div8, "-o", out, "--profile", "48", "--divisor", "16", "-q")[0] == 0  # stricter: fine
    assert rt.load(out).model.inputs[0].divisor == 16
    shutil.rmtree(out)
    code, _, err = cli("build-engine", div8, "-o", out, "--profiles", tmp_path / "missing.yaml", "-q")
    assert code == 2 and "'--profiles': File" in err and "missing.yaml' does not exist" in err
    code, _, err = cli("build-engine", div8, "-o", out, "--profile", "48", "--precision", "int8",
                       "--calib-data", tmp_path, "--calib-samples", "0", "-q")
    assert code == 2 and "Invalid value for '--calib-samples': 0 is not in the range x>=1" in err
    code, _, err = cli("build-engine", div8, "-o", out, "--profile", "48", "--threads", "-1", "-q")
    assert code == 2 and "Invalid value for '--threads': -1 is not in the range x>=0" in err


def test_api_equivalents(div8, tmp_path):
    from mrdeploy.errors import CalibrationError
    from mrdeploy.exporter.build import build_bundle
    from mrdeploy.runtime.profiles import load_profiles_file

    with pytest.raises(ExportError, match="--divisor 3 conflicts"):
        build_bundle(div8, tmp_path / "b", ["48"], divisor=3, quiet=True)
    with pytest.raises(ProfileError, match=r"profiles file .*nope.yaml: cannot read it \(No such file or directory\)"):
        load_profiles_file(str(tmp_path / "nope.yaml"))
    with pytest.raises(CalibrationError, match="--calib-samples must be at least 1, got 0"):
        build_bundle(div8, tmp_path / "c", ["48"], precision="int8", calib_data=np.zeros((2, 3, 48, 48), np.float32),
                     calib_samples=0, quiet=True)
    assert not (tmp_path / "c").exists()


def test_inspect_a_zero_byte_onnx(tmp_path, cli):
    (tmp_path / "empty.onnx").write_bytes(b"")
    code, _, err = cli("inspect", tmp_path / "empty.onnx")
    assert code == 1 and "empty.onnx: not a readable ONNX model (expected a ModelProto with an ir_version and a graph, got a 0-byte file" in err
