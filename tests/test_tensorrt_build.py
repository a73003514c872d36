"""The tensorrt backend against a test double of TensorRT 10.16 and 11.4 (tests/trt_double.py)."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mrdeploy.errors import BackendUnavailable, ExportError
from mrdeploy.exporter.build import build_bundle
from mrdeploy.runtime.manifest import Manifest, sha256_file, verify_artifacts
from tests.trt_double import ApiDrift, install


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small dynamic model with a Resize whose scales must stay float32 under the fp16 cast."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2, "w"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Resize", ["r", "", "scales"], ["mask"], mode="nearest"),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 8, None, None])], inits,
    )
    path = tmp_path_factory.mktemp("trt") / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


PROFILES = ["small=32-96@64", "128x160"]


def _build(model, tmp_path, **kw):
    return build_bundle(model, tmp_path / "b", PROFILES, backend="tensorrt", batch="1-4@2", quiet=True, **kw)


@pytest.mark.parametrize("major", ["10", "11"])
def test_profiles_translate_to_builder_calls(model, tmp_path, monkeypatch, major):
    trt = install(monkeypatch, major)
    res = _build(model, tmp_path, precision="fp16", workspace=256, hardware_compatible=True)
    # one optimization profile per engine, with the profile's min/opt/max
    shapes = trt.calls_to("IOptimizationProfile.set_shape")
    assert [(c["input"], tuple(c["min"]), tuple(c["opt"]), tuple(c["max"])) for c in shapes] == [
        ("input", (1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 96, 96)),
        ("input", (1, 3, 128, 160), (2, 3, 128, 160), (4, 3, 128, 160)),
    ]
    assert len(trt.calls_to("IBuilderConfig.add_optimization_profile")) == 2
    pools = trt.calls_to("IBuilderConfig.set_memory_pool_limit")
    assert [(c["pool"].name, c["pool_size"]) for c in pools] == [("WORKSPACE", 256 << 20)] * 2
    # ONE timing cache, created once and set on both configs
    assert len(trt.calls_to("IBuilderConfig.create_timing_cache")) == 1
    caches = trt.calls_to("IBuilderConfig.set_timing_cache")
    assert len(caches) == 2 and caches[0]["cache"] is caches[1]["cache"] and caches[0]["ignore_mismatch"] is False
    hw = trt.calls_to("IBuilderConfig.hardware_compatibility_level=")
    assert [repr(c["value"]) for c in hw] == ["HardwareCompatibilityLevel.AMPERE_PLUS"] * 2
    flags = [c["flags"] for c in trt.calls_to("Builder.create_network")]
    plans = [json.loads((res.path / p.artifact).read_bytes()[len(b"FAKEPLAN"):]) for p in res.profiles]
    if major == "10":  # weakly typed network + the FP16 builder flag
        assert flags == [0, 0]
        assert [c["flag"].name for c in trt.calls_to("IBuilderConfig.set_flag")] == ["FP16", "FP16"]
        assert all(p["fp16_initializers"] == 0 and p["builder_flags"] == ["FP16"] for p in plans)
    else:  # strongly typed; no precision flags: the ONNX model is cast to fp16 before parsing
        strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        assert flags == [strongly, strongly]
        assert trt.calls_to("IBuilderConfig.set_flag") == []
        # the conv weight became fp16, the Resize scales stayed fp32
        assert all(p["fp16_initializers"] == 1 and p["float_initializers"] == 1 for p in plans)
    # the bundle: plans, the shared timing cache (updated by both builds), versions and GPU recorded
    m = Manifest.read(res.path)
    verify_artifacts(res.path, m)
    assert [e.artifact for e in m.profiles] == ["profiles/small.plan", "profiles/p1_128x160.plan"]
    assert (res.path / "profiles/timing.cache").read_bytes() == b"FAKE-TIMING-CACHE:2"
    assert m.build["timing_cache"]["sha256"] == sha256_file(res.path / "profiles/timing.cache")
    assert m.build["tensorrt"] == trt.__version__ and m.build["gpu"] == "NVIDIA Fake A10"
    assert m.build["compute_capability"] == "8.6"
    o = m.profiles[0].options
    assert (o["tensorrt_version"], o["hardware_compatibility"], o["workspace_mib"]) == (trt.__version__, "ampere_plus", 256)
    assert o["fp16"] == ("flag" if major == "10" else "cast") and m.profiles[0].precision == "fp16"


def test_fp32_builds_set_no_precision_flag_and_keep_floats(model, tmp_path, monkeypatch):
    trt = install(monkeypatch, "10")
    res = _build(model, tmp_path)
    assert trt.calls_to("IBuilderConfig.set_flag") == []
    assert trt.calls_to("IBuilderConfig.hardware_compatibility_level=") == []
    plan = json.loads((res.path / res.profiles[0].artifact).read_bytes()[8:])
    assert plan["float_initializers"] == 2 and plan["pools"] == {"WORKSPACE": 1024 << 20}


def test_timing_cache_file_is_read_and_updated(model, tmp_path, monkeypatch):
    install(monkeypatch, "11")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"FAKE-TIMING-CACHE:5")
    _build(model, tmp_path, timing_cache=cache)
    assert cache.read_bytes() == b"FAKE-TIMING-CACHE:7"
    cache.write_bytes(b"a cache from another GPU")
    with pytest.raises(ExportError, match="the timing cache does not match this TensorRT/GPU"):
        build_bundle(model, tmp_path / "c", ["64"], backend="tensorrt", timing_cache=cache, quiet=True)
    assert not (tmp_path / "c").exists()


def test_parser_errors_are_reported_and_leave_no_bundle(model, tmp_path, monkeypatch):
    trt = install(monkeypatch, "10")
    trt.unsupported_ops.add("Resize")
    with pytest.raises(ExportError) as e:
        _build(model, tmp_path)
    assert str(e.value) == (
        "profile 'small': TensorRT 10.16.1.11 cannot parse the ONNX model: node 2: No importer registered for op: Resize"
    )
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []


def test_a_failed_engine_build_leaves_no_bundle(model, tmp_path, monkeypatch):
    trt = install(monkeypatch, "11")
    trt.fail_build = True
    with pytest.raises(ExportError, match="profile 'small': TensorRT 11.4.0.106 could not build the engine"):
        _build(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_double_rejects_names_a_version_does_not_have(monkeypatch):
    t10 = install(monkeypatch, "10")
    assert t10.BuilderFlag.FP16.name == "FP16"
    cfg10 = t10.Builder(t10.Logger()).create_builder_config()
    cfg10.int8_calibrator = None  # exists on 10
    t11 = install(monkeypatch, "11")
    with pytest.raises(ApiDrift, match=r"tensorrt 11.4.0.106: BuilderFlag.FP16 does not exist"):
        _ = t11.BuilderFlag.FP16
    with pytest.raises(ApiDrift, match="NetworkDefinitionCreationFlag.EXPLICIT_BATCH does not exist"):
        _ = t11.NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    cfg = t11.Builder(t11.Logger()).create_builder_config()
    with pytest.raises(ApiDrift, match="IBuilderConfig.int8_calibrator is not a property"):
        cfg.int8_calibrator = None
    with pytest.raises(ApiDrift, match="IBuilderConfig.set_quantization_flag does not exist"):
        _ = cfg.set_quantization_flag
    with pytest.raises(ApiDrift, match="module has no name 'IInt8EntropyCalibrator2'"):
        _ = t11.IInt8EntropyCalibrator2
    with pytest.raises(TypeError, match="set_memory_pool_limit takes"):
        cfg.set_memory_pool_limit(t11.MemoryPoolType.WORKSPACE, size=1)  # the real name is pool_size
    with pytest.raises(ApiDrift, match="num_optimization_profiles is read-only"):
        cfg.num_optimization_profiles = 3


def test_without_tensorrt_the_build_stops_at_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    start = time.perf_counter()
    with pytest.raises(BackendUnavailable) as e:  # before reading the (missing) model
        build_bundle(tmp_path / "missing.onnx", tmp_path / "b", ["224"], backend="tensorrt")
    assert time.perf_counter() - start < 1.0
    assert str(e.value).startswith("building tensorrt engines needs TensorRT 10+ and a CUDA GPU; ")
    assert list(tmp_path.iterdir()) == []


def test_gpu_check_example_says_what_it_needs(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    from examples import gpu_check

    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check: building tensorrt engines needs TensorRT 10+ and a CUDA GPU")


def test_gpu_check_example_needs_a_gpu_even_with_tensorrt(monkeypatch, capsys):
    install(monkeypatch, "11")
    import mrdeploy.exporter.tensorrt_build as tb

    def no_gpu():
        raise BackendUnavailable(f"{tb.NEEDS} (no CUDA GPU found: cudaGetDeviceCount -> 100, 0)")

    monkeypatch.setattr(tb, "gpu_info", no_gpu)
    from examples import gpu_check

    assert gpu_check.main([]) == 2
    assert "no CUDA GPU found" in capsys.readouterr().err


def test_gpu_info_reads_cuda_python(monkeypatch):
    import types

    from mrdeploy.exporter.tensorrt_build import gpu_info

    class Props:
        name, major, minor = b"NVIDIA A10\x00\x00", 8, 6

    devices = {"n": 1}
    runtime = types.SimpleNamespace(
        cudaGetDeviceCount=lambda: (0, devices["n"]),
        cudaGetDeviceProperties=lambda i: (0, Props()),
    )
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    assert gpu_info() == ("NVIDIA A10", "8.6")
    devices["n"] = 0
    with pytest.raises(BackendUnavailable, match=r"no CUDA GPU found: cudaGetDeviceCount -> 0, 0"):
        gpu_info()
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setattr("shutil.which", lambda exe: None)
    with pytest.raises(BackendUnavailable, match=r"cuda-python is not installed and nvidia-smi found no GPU"):
        gpu_info()


def test_a_wrong_specialization_stops_before_tensorrt(model, tmp_path, monkeypatch):
    import mrdeploy.exporter.specialize as sp

    trt = install(monkeypatch, "10")
    real = sp.specialize

    def broken(m, profile):
        s = real(m, profile)
        s.model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 2, 3], np.float32), "scales_bad"))
        for n in s.model.graph.node:
            if n.op_type == "Resize":
                n.input[2] = "scales_bad"
        return s

    monkeypatch.setattr(sp, "specialize", broken)
    with pytest.raises(ExportError, match="profile 'small': the fp32 specialized model does not match the source ONNX model"):
        _build(model, tmp_path)
    assert trt.calls_to("Builder.build_serialized_network") == [] and list(tmp_path.iterdir()) == []
