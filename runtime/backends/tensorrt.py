"""The TensorRT backend: one serialized plan per profile, run with the TensorRT 10.x / 11.x Python API.

Needs TensorRT and a CUDA GPU, with device memory handled through cuda-python
(``cuda.bindings.runtime``, or the older ``cuda.cudart``). The project's development and CI machines
have neither, so this module is exercised there only through its guard (BackendUnavailable) and a
test double; ``examples/gpu_check.py`` runs it for real on a GPU machine.

Before a plan is deserialized, the manifest's record of the TensorRT version and GPU compute
capability it was built for is checked against this machine (``check_tensorrt_compat``): a plan built
elsewhere gives a BundleError naming the profile, expected and got, instead of a crash or an opaque
deserialization failure.

API used (present in both 10.16 and 11.4): ``Logger``, ``Runtime(logger)``,
``Runtime.deserialize_cuda_engine(bytes)``, ``Runtime.engine_host_code_allowed`` (version-compatible
plans), ``ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode / get_tensor_dtype``,
``create_execution_context()``, ``IExecutionContext.set_input_shape / get_tensor_shape /
set_tensor_address / execute_async_v3(stream)``, ``tensorrt.nptype``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mrdeploy.errors import BackendUnavailable, BundleError, InputError
from mrdeploy.runtime.backends.base import Engine
from mrdeploy.runtime.backends.registry import Backend, BuiltProfile, ProfileBuild
from mrdeploy.runtime.manifest import ProfileEntry, check_tensorrt_compat

NEEDS = "the tensorrt backend needs TensorRT (pip install tensorrt) and a CUDA GPU"


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailable(f"{NEEDS}: {e}") from None
    return trt


def import_cudart():
    """cuda-python's runtime API module (``cuda.bindings.runtime`` in cuda-python >= 12.6, else ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise BackendUnavailable(f"{NEEDS}, with cuda-python for device memory (pip install cuda-python): {e}") from None
    return cudart


def _call(cudart, result, what: str):
    """cuda-python returns (err, *values): raise on an error, return the value(s)."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = cudart.cudaGetErrorName(err)[1] if hasattr(cudart, "cudaGetErrorName") else err
        raise BackendUnavailable(f"{NEEDS}: CUDA call {what} failed with {name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def device_info(cudart) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of the current CUDA device."""
    count = _call(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if not count:
        raise BackendUnavailable(f"{NEEDS}: no CUDA device found")
    dev = _call(cudart, cudart.cudaGetDevice(), "cudaGetDevice")
    props = _call(cudart, cudart.cudaGetDeviceProperties(dev), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return str(name), f"{props.major}.{props.minor}"


class _DeviceBuffer:
    """A device allocation that grows to the largest size asked of it."""

    def __init__(self, cudart):
        self.cudart, self.ptr, self.nbytes = cudart, 0, 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(_call(self.cudart, self.cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            self.cudart.cudaFree(self.ptr)
            self.ptr, self.nbytes = 0, 0


class TrtEngine(Engine):
    """A profile's serialized TensorRT plan with one execution context and one CUDA stream.

    ``run`` holds a lock: an execution context serves one inference at a time, so concurrent callers
    of the same profile queue up (different profiles run concurrently).
    """

    backend = "tensorrt"

    def __init__(self, path: Path, entry: ProfileEntry, build: Mapping | None = None):
        super().__init__(path, entry, build)
        trt = import_tensorrt()
        cudart = import_cudart()
        self.trt, self.cudart = trt, cudart
        gpu, cc = device_info(cudart)
        check_tensorrt_compat(entry, self.build, trt.__version__, cc, gpu)

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if entry.options.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True
        plan = Path(path).read_bytes()
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise BundleError(
                f"profile {entry.name!r}: TensorRT {trt.__version__} could not deserialize {path} "
                f"(on {gpu}, compute capability {cc}); see the TensorRT log above"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailable(f"profile {entry.name!r}: TensorRT could not create an execution context")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self.input_dtypes = {n: self._dtypes[n] for n in self.input_names}
        self._buffers = {n: _DeviceBuffer(cudart) for n in names}
        self._stream = _call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self.cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            hold = []  # host arrays must outlive the async copies
            for name in self.input_names:
                if name not in feeds:
                    raise InputError(f"profile {self.entry.name!r}: the engine expects input {name!r}")
                a = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
                hold.append(a)
                if not self._context.set_input_shape(name, tuple(int(d) for d in a.shape)):
                    raise InputError(
                        f"profile {self.entry.name!r}: input {name!r} shape {a.shape} is outside the engine's "
                        "optimization profile"
                    )
                ptr = self._buffers[name].ensure(a.nbytes)
                _call(cudart, cudart.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes, h2d, self._stream), "cudaMemcpyAsync")
                self._context.set_tensor_address(name, ptr)
            outs = {}
            for name in self.output_names:
                shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
                y = np.empty(shape, dtype=self._dtypes[name])
                outs[name] = y
                self._context.set_tensor_address(name, self._buffers[name].ensure(y.nbytes))
            if not self._context.execute_async_v3(int(self._stream)):
                raise BundleError(f"profile {self.entry.name!r}: TensorRT execute_async_v3 failed (see its log)")
            for name, y in outs.items():
                _call(
                    cudart,
                    cudart.cudaMemcpyAsync(y.ctypes.data, self._buffers[name].ptr, y.nbytes, d2h, self._stream),
                    "cudaMemcpyAsync",
                )
            _call(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            del hold
        return outs

    def close(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            for b in getattr(self, "_buffers", {}).values():
                b.free()
            if getattr(self, "_stream", None) is not None:
                self.cudart.cudaStreamDestroy(self._stream)
                self._stream = None
            self._context = self._engine = self._runtime = None


class TensorRTBackend(Backend):
    """Per profile, a serialized plan ``profiles/<name>.plan`` built from the specialized model
    (``mrdeploy.exporter.tensorrt_build``) with one timing cache for the whole build
    (``profiles/timing.cache``), served by :class:`TrtEngine`."""

    name = "tensorrt"
    engine = TrtEngine
    precisions = ("fp32", "fp16", "int8")
    qdq_activations = "int8"  # symmetric int8: what TensorRT's explicit quantization takes
    build_keys = ("tensorrt", "gpu", "compute_capability")
    install_hint = NEEDS

    def __init__(self, *, workspace=None, timing_cache=None, hardware_compatible=False, **settings):
        super().__init__(**settings)
        from mrdeploy.exporter.tensorrt_build import TensorRTBuilder

        self.timing_cache = timing_cache
        cache = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else None
        self.trt = TensorRTBuilder(  # BackendUnavailable here, before any work, without TensorRT/GPU
            workspace_mib=workspace, timing_cache=cache, hardware_compatible=hardware_compatible
        )

    @classmethod
    def auto_precisions(cls) -> tuple[str, ...]:
        return ("fp16", "int8")  # on a GPU, fp32 is never the fastest: fp16 keeps its accuracy (allclose check)

    @classmethod
    def builder(cls, **settings) -> TensorRTBackend:
        return cls(**settings)  # TensorRTBuilder says what is missing (TensorRT, cuda-python, a GPU)

    @classmethod
    def is_available(cls) -> bool:
        try:
            from mrdeploy.exporter.tensorrt_build import gpu_info, import_tensorrt

            import_tensorrt()
            gpu_info()
        except (ImportError, BackendUnavailable):
            return False
        return True

    def build_profile(self, stage: ProfileBuild) -> BuiltProfile:
        # the ONNX that goes into TensorRT is checked (fp32_rows); the engines on a GPU: examples/gpu_check.py
        rows = stage.fp32_rows
        engine = self.trt.build(stage.model, stage.profile, stage.precision)
        artifact = f"profiles/{stage.profile.name}.plan"
        (stage.directory / artifact).write_bytes(engine.plan)
        options = dict(engine.options)
        options["onnx_check"] = {"max_abs": max(r.max_abs for r in rows), "min_cosine": min(r.cosine for r in rows)}
        return BuiltProfile(artifact, options, notes=list(engine.notes))

    def build_info(self) -> dict:
        return {"tensorrt": self.trt.version, "gpu": self.trt.gpu, "compute_capability": self.trt.compute_capability}

    def finish(self, directory: Path, build: dict) -> None:
        from mrdeploy._atomic import atomic_file
        from mrdeploy.runtime.manifest import sha256_file

        cache = self.trt.serialized_timing_cache()
        (directory / "profiles" / "timing.cache").write_bytes(cache)
        build["timing_cache"] = {"artifact": "profiles/timing.cache", "sha256": sha256_file(directory / "profiles/timing.cache")}
        if self.timing_cache:
            with atomic_file(self.timing_cache) as t:  # like trtexec --timingCacheFile: read, then updated
                t.write_bytes(cache)
