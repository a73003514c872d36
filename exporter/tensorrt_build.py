"""The tensorrt backend: one serialized engine (plan) per profile, with the TensorRT 10 and 11 Python APIs.

Per profile: ``Builder.create_network`` (flags 0 on 10: explicit batch is the only mode there and the
EXPLICIT_BATCH flag is deprecated; ``STRONGLY_TYPED`` on 11, where it is accepted and every network is
strongly typed anyway), ``OnnxParser.parse`` (parser errors are reported with their node), one
optimization profile with ``set_shape(input, min, opt, max)`` per input, the workspace limit via
``set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``, ONE ``ITimingCache`` created once and set on
every profile's config (so later profiles reuse the tactics timed for earlier ones; it is serialized into
the bundle as ``profiles/timing.cache`` and can seed the next build), and ``build_serialized_network``.

Precision: fp16 is ``BuilderFlag.FP16`` on 10; on 11 there are no precision flags, so the ONNX model
itself is cast to float16 (:mod:`mrdeploy.exporter.fp16`, inputs and outputs kept float32) before parsing.
Hardware compatibility: ``config.hardware_compatibility_level = HardwareCompatibilityLevel.AMPERE_PLUS``.

INT8 hook (filled by the calibration helper): an int8 profile arrives here as an ONNX model that already
carries explicit Q/DQ nodes (``calibration/``), which both 10 and 11 build as is (on 10 the network is
then created STRONGLY_TYPED so the Q/DQ types are obeyed); the implicit ``int8_calibrator`` path exists
only on 10 and is not used. ``TensorRTBuilder.build(..., precision="int8")`` accepts such a model.

Without TensorRT, :func:`import_tensorrt` raises BackendUnavailable at once, before any work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mrdeploy.errors import BackendUnavailable, ExportError
from mrdeploy.runtime.profiles import Profile

NEEDS = (
    "building tensorrt engines needs TensorRT 10+ and a CUDA GPU; install them on an NVIDIA GPU machine "
    "(pip install 'mrdeploy[tensorrt]'), or build with --backend onnxruntime"
)
DEFAULT_WORKSPACE_MIB = 1024


def import_tensorrt():
    """``(tensorrt module, major version)``; BackendUnavailable when it is missing or older than 10."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailable(f"{NEEDS} (import tensorrt failed: {e})") from None
    version = str(getattr(trt, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < 10:
        raise BackendUnavailable(f"{NEEDS}; got TensorRT {version}")
    return trt, major


def gpu_info() -> tuple[str, str]:
    """(GPU name, compute capability "8.6") of device 0: via cuda-python, else ``nvidia-smi``;
    BackendUnavailable without a GPU (the runtime needs the compute capability a plan was built for)."""
    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
    except ImportError:
        found = _nvidia_smi()
        if found is None:
            raise BackendUnavailable(
                f"{NEEDS} (cuda-python is not installed and nvidia-smi found no GPU: pip install cuda-python)"
            ) from None
        return found
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        raise BackendUnavailable(f"{NEEDS} (no CUDA GPU found: cudaGetDeviceCount -> {int(err)}, {count})")
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise BackendUnavailable(f"{NEEDS} (cudaGetDeviceProperties failed: {err})")
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return name, f"{props.major}.{props.minor}"


def _nvidia_smi() -> tuple[str, str] | None:
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader", "--id=0"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()
        name, cc = (part.strip() for part in out.splitlines()[0].rsplit(",", 1))
        return name, cc
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@dataclass
class EngineResult:
    plan: bytes
    options: dict
    seconds: float
    layers: int = 0
    notes: list[str] = field(default_factory=list)


class TensorRTBuilder:
    """Builds the profiles of one bundle, sharing a Builder, a logger and one timing cache."""

    def __init__(
        self,
        *,
        workspace_mib: int | None = None,
        timing_cache: bytes | None = None,
        hardware_compatible: bool = False,
        verbose: bool = False,
    ):
        self.trt, self.major = import_tensorrt()
        self.gpu, self.compute_capability = gpu_info()
        trt = self.trt
        self.logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        self.builder = trt.Builder(self.logger)
        self.workspace_mib = int(workspace_mib or DEFAULT_WORKSPACE_MIB)
        self.initial_cache = timing_cache or b""
        self.cache = None  # the one ITimingCache of this build, created with the first config
        self.hardware_compatible = bool(hardware_compatible)

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    def _network_flags(self, precision: str) -> int:
        trt = self.trt
        strongly = self.major >= 11 or precision == "int8"
        return (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if strongly else 0

    def _parse(self, network, model_bytes: bytes, profile: Profile) -> None:
        parser = self.trt.OnnxParser(network, self.logger)
        if not parser.parse(model_bytes):
            errors = []
            for i in range(parser.num_errors):
                e = parser.get_error(i)
                errors.append(f"node {e.node()}: {e.desc()}")
            raise ExportError(
                f"profile {profile.name!r}: TensorRT {self.version} cannot parse the ONNX model: "
                + ("; ".join(errors) or "no error reported")
            )

    def build(self, model, profile: Profile, precision: str = "fp32") -> EngineResult:
        """One serialized engine for ``profile`` from an ONNX ModelProto (already specialized or not)."""
        trt = self.trt
        if precision not in ("fp32", "fp16", "int8"):
            raise ExportError(f"tensorrt precision: expected fp32, fp16 or int8, got {precision!r}")
        start = time.perf_counter()
        notes = []
        if precision == "fp16" and self.major >= 11:
            from mrdeploy.exporter.fp16 import convert_to_fp16

            model = convert_to_fp16(model)
            notes.append("fp16 by casting the ONNX model (TensorRT 11: strongly typed)")
        network = self.builder.create_network(self._network_flags(precision))
        self._parse(network, model.SerializeToString(), profile)
        config = self.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mib << 20)
        if self.cache is None:
            self.cache = config.create_timing_cache(self.initial_cache)
        if not config.set_timing_cache(self.cache, False):
            raise ExportError(
                f"profile {profile.name!r}: the timing cache does not match this TensorRT/GPU "
                "(pass a cache made here, or none)"
            )
        opt_profile = self.builder.create_optimization_profile()
        for name, r in profile.inputs.items():
            opt_profile.set_shape(name, trt.Dims(list(r.min)), trt.Dims(list(r.opt)), trt.Dims(list(r.max)))
        config.add_optimization_profile(opt_profile)
        if precision == "fp16" and self.major == 10:
            config.set_flag(trt.BuilderFlag.FP16)
        if self.hardware_compatible:
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        plan = self.builder.build_serialized_network(network, config)
        if plan is None:
            raise ExportError(
                f"profile {profile.name!r}: TensorRT {self.version} could not build the engine "
                "(see the TensorRT log above; a larger --workspace may help)"
            )
        options = {
            "tensorrt_version": self.version,
            "gpu": self.gpu,
            "compute_capability": self.compute_capability,
            "hardware_compatibility": "ampere_plus" if self.hardware_compatible else "none",
            "version_compatible": False,
            "workspace_mib": self.workspace_mib,
            "strongly_typed": bool(self._network_flags(precision)),
            "fp16": "cast" if precision == "fp16" and self.major >= 11 else ("flag" if precision == "fp16" else None),
            "timing_cache": "profiles/timing.cache",
        }
        return EngineResult(bytes(plan), options, time.perf_counter() - start, network.num_layers, notes)

    def serialized_timing_cache(self) -> bytes:
        return bytes(self.cache.serialize()) if self.cache is not None else b""
