"""The TensorRT engine wrapper against a fake ``tensorrt`` runtime and a fake cuda-python.

No TensorRT or GPU here: the fakes are strict about names (every attribute the wrapper touches on
Runtime / ICudaEngine / IExecutionContext / Logger must exist in the 10.16 and 11.4 reference APIs in
tests/trt_api, read by tests/trt_double.load_api) and move real bytes through fake device memory, so the
wrapper's data path (shapes, addresses, copies, stream) is checked end to end: the fake plan doubles its
input.
"""

from __future__ import annotations

import ctypes
import json
import sys
import types

import numpy as np
import pytest

import mrdeploy.runtime as rt
from mrdeploy.errors import BackendUnavailable, BundleError
from mrdeploy.runtime.manifest import Manifest, ProfileEntry, sha256_file
from mrdeploy.runtime.modelinfo import InputInfo, ModelInfo, OutputInfo
from mrdeploy.runtime.profiles import make_profile, parse_profile
from tests.trt_double import VERSIONS, load_api


class _Strict:
    _api_class = ""

    def __getattribute__(self, name):
        if not name.startswith("_"):
            api = object.__getattribute__(self, "_mod")._api
            if name not in api.classes[object.__getattribute__(self, "_api_class")].names():
                raise AttributeError(f"{object.__getattribute__(self, '_api_class')}.{name} is not in the TensorRT API")
            object.__getattribute__(self, "_mod")._used.add((object.__getattribute__(self, "_api_class"), name))
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        self.__getattribute__(name) if hasattr(type(self), name) else None
        object.__setattr__(self, name, value)


def fake_tensorrt(major: str, device: dict) -> types.ModuleType:
    mod = types.ModuleType("tensorrt")
    mod._api = load_api(major)
    mod._used = set()
    mod.__version__ = VERSIONS[major][0]
    mod.deserialized = []
    io_mode = types.SimpleNamespace(NONE=0, INPUT=1, OUTPUT=2)
    mod.TensorIOMode = io_mode
    dtypes = {"FLOAT": np.float32, "HALF": np.float16}
    mod.DataType = types.SimpleNamespace(**{k: k for k in dtypes})
    mod.nptype = lambda dt: dtypes[dt]

    class Logger(_Strict):
        _api_class = "Logger"
        WARNING = 2

        def __init__(self, min_severity=2):
            object.__setattr__(self, "_mod", mod)

    class IExecutionContext(_Strict):
        _api_class = "IExecutionContext"

        def __init__(self, engine):
            object.__setattr__(self, "_mod", mod)
            object.__setattr__(self, "_engine", engine)
            object.__setattr__(self, "_shapes", {})
            object.__setattr__(self, "_addr", {})

        def set_input_shape(self, name, shape):
            lo, hi = self._engine._range
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self._shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self._shapes["input"]  # the output follows the input

        def set_tensor_address(self, name, memory):
            self._addr[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle):
            assert stream_handle == device["stream"]
            x = np.frombuffer(bytes(device["mem"][self._addr["input"]]), np.float32)
            n = x.size
            y = (x * 2).astype(np.float32).tobytes()
            device["mem"][self._addr["output"]][: 4 * n] = y
            return True

    class ICudaEngine(_Strict):
        _api_class = "ICudaEngine"

        def __init__(self, plan):
            object.__setattr__(self, "_mod", mod)
            object.__setattr__(self, "_range", (plan["min"], plan["max"]))

        @property
        def num_io_tensors(self):
            return 2

        def get_tensor_name(self, index):
            return ["input", "output"][index]

        def get_tensor_mode(self, name):
            return io_mode.INPUT if name == "input" else io_mode.OUTPUT

        def get_tensor_dtype(self, name):
            return "FLOAT"

        def create_execution_context(self):
            return IExecutionContext(self)

    class Runtime(_Strict):
        _api_class = "Runtime"
        engine_host_code_allowed = False

        def __init__(self, logger):
            object.__setattr__(self, "_mod", mod)

        def deserialize_cuda_engine(self, serialized_engine):
            mod.deserialized.append(len(serialized_engine))
            return ICudaEngine(json.loads(bytes(serialized_engine)))

    mod.Logger, mod.Runtime = Logger, Runtime
    return mod


def fake_cudart(device: dict) -> types.ModuleType:
    """cuda.bindings.runtime: (err, value) tuples, device memory as bytearrays keyed by fake pointers."""
    m = types.ModuleType("cuda.bindings.runtime")
    ok = 0
    device.update(mem={}, next=0x1000, stream=77, freed=[])
    m.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    m.cudaGetErrorName = lambda err: (ok, f"cudaError{err}")
    m.cudaGetDeviceCount = lambda: (ok, device["count"])
    m.cudaGetDevice = lambda: (ok, 0)
    m.cudaGetDeviceProperties = lambda dev: (ok, types.SimpleNamespace(
        name=device["name"].encode() + b"\0\0", major=device["cc"][0], minor=device["cc"][1]))

    def malloc(n):
        ptr = device["next"]
        device["next"] += n + 256
        device["mem"][ptr] = bytearray(n)
        return ok, ptr

    def memcpy(dst, src, count, kind, stream):
        assert stream == device["stream"]
        if kind == 1:
            device["mem"][dst][:count] = ctypes.string_at(src, count)
        else:
            ctypes.memmove(dst, bytes(device["mem"][src][:count]), count)
        return (ok,)

    m.cudaMalloc = malloc
    m.cudaFree = lambda ptr: (device["freed"].append(ptr), (ok,))[1]
    m.cudaMemcpyAsync = memcpy
    m.cudaStreamCreate = lambda: (ok, device["stream"])
    m.cudaStreamSynchronize = lambda s: (ok,)
    m.cudaStreamDestroy = lambda s: (ok,)
    return m


@pytest.fixture
def fakes(monkeypatch):
    def install(major="10", cc=(8, 6), count=1, name="NVIDIA A10"):
        device = {"cc": cc, "count": count, "name": name}
        trt = fake_tensorrt(major, device)
        cudart = fake_cudart(device)
        cuda = types.ModuleType("cuda")
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = cudart
        cuda.bindings = bindings
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setitem(sys.modules, "cuda", cuda)
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
        return trt, device

    return install


def trt_bundle(path, built="10.16.1.11", cc="8.6", **options):
    prof = make_profile(parse_profile("small=32-64@48"), {"input": 3})
    (path / "profiles").mkdir(parents=True)
    plan = path / "profiles" / "small.plan"
    plan.write_bytes(json.dumps({"min": list(prof.inputs["input"].min), "max": list(prof.inputs["input"].max)}).encode())
    (path / "model.onnx").write_bytes(b"source")
    entry = ProfileEntry(prof, "tensorrt", "fp16", "profiles/small.plan", sha256_file(plan),
                         options={"tensorrt_version": built, "compute_capability": cc, "gpu": "NVIDIA A10", **options})
    info = ModelInfo("double", "dense", [InputInfo("input", 3)], [OutputInfo("output", True, 1)])
    Manifest(info, {"artifact": "model.onnx", "sha256": sha256_file(path / "model.onnx")}, "pad", [entry],
             {"tensorrt": built, "compute_capability": cc, "gpu": "NVIDIA A10"}).write(path)
    return path


@pytest.mark.parametrize("major", ["10", "11"])
def test_trt_engine_runs_through_device_memory(fakes, tmp_path, major):
    trt, device = fakes(major)
    b = trt_bundle(tmp_path / "b", built=VERSIONS[major][0])
    x = np.random.default_rng(0).standard_normal((1, 3, 40, 50)).astype(np.float32)
    with rt.load(b) as r:
        y = r(x)
        np.testing.assert_array_equal(y, 2 * x)
        y2 = r(np.ones((1, 3, 20, 20), np.float32))  # padded to 32x32, run, cropped back
        assert r.last_decision.served_shapes["input"] == (1, 3, 32, 32)
        np.testing.assert_array_equal(y2, 2 * np.ones((1, 3, 20, 20), np.float32))
    assert trt.deserialized and device["freed"]  # buffers freed on close
    used = {name for _, name in trt._used}
    assert {"deserialize_cuda_engine", "create_execution_context", "set_input_shape", "set_tensor_address",
            "execute_async_v3", "get_tensor_shape", "num_io_tensors", "get_tensor_mode"} <= used
    other = load_api("11" if major == "10" else "10")
    for cls, name in trt._used:  # the same calls exist in the other major version too
        assert name in other.classes[cls].names(), (cls, name)


def test_trt_version_and_gpu_checked_before_deserializing(fakes, tmp_path):
    trt, _ = fakes("11")
    b = trt_bundle(tmp_path / "v", built="10.16.1.11")
    with rt.load(b) as r, pytest.raises(BundleError) as e:
        r(np.zeros((1, 3, 48, 48), np.float32))
    assert "profile 'small' (profiles/small.plan): plan built for TensorRT 10.16.1.11, got TensorRT 11.4.0.106" in str(e.value)
    assert trt.deserialized == []

    trt, _ = fakes("10", cc=(8, 9), name="NVIDIA L4")
    b = trt_bundle(tmp_path / "g", built="10.16.1.11", cc="8.6")
    with rt.load(b) as r, pytest.raises(BundleError) as e:
        r(np.zeros((1, 3, 48, 48), np.float32))
    assert "built for compute capability 8.6 (NVIDIA A10), got compute capability 8.9 (NVIDIA L4)" in str(e.value)
    assert trt.deserialized == []


def test_trt_hardware_compatible_plan_and_no_gpu(fakes, tmp_path):
    trt, _ = fakes("10", cc=(9, 0))
    b = trt_bundle(tmp_path / "h", hardware_compatibility="ampere_plus", version_compatible=True)
    with rt.load(b) as r:
        r(np.zeros((1, 3, 48, 48), np.float32))
        assert r._engines["small"]._runtime.engine_host_code_allowed is True
    fakes("10", count=0)
    with rt.load(b) as r, pytest.raises(BackendUnavailable, match="needs TensorRT .* and a CUDA GPU: no CUDA device found"):
        r(np.zeros((1, 3, 48, 48), np.float32))
