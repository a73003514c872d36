"""The OpenVINO backend: per profile an IR (``profiles/<name>.xml`` + ``.bin``), compiled on the CPU.

Run side: imports numpy and, when an engine loads, ``openvino`` only. The IR is compiled with
``PERFORMANCE_HINT=LATENCY``, ``threads`` per call (``load(threads=)``, else what the build recorded) on
as many streams as the cores hold (:func:`streams_for`) and ``INFERENCE_PRECISION_HINT`` from the profile's precision (fp32 and int8 -> f32: an int8
profile is the Q/DQ model, whose quantized ops OpenVINO runs in int8; bf16 -> bf16). ``run`` takes an
InferRequest from a small pool (one per concurrent caller, created on demand and reused), so calls from
several threads run side by side. An ad-hoc timing during development (the example CNN at 64x64, one
and two calling threads) found the pool faster than one request behind a lock and than a new request per
call.

Build side (``OpenVINOBackend.build_profile``): the specialized ONNX (fp32, or the Q/DQ model the
int8 path produces with ORT's uint8-activation scheme) -> ``openvino.convert_model`` -> reshaped to
the profile (static shapes for an exact profile, bounded ``Dimension(min, max)`` for a ranged one) ->
``openvino.save_model(..., compress_to_fp16=False)``, then compiled and checked against the source
ONNX at min/opt/max (fp32 with the fp32 tolerances, bf16 with looser ones; int8 against ONNX Runtime
running the same Q/DQ model, the Q/DQ model itself being compared with the source on held-out real
data by the calibration). The OpenVINO version is recorded in the build block; loading refuses another major
version, naming both.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mrdeploy.errors import BackendUnavailable, BundleError, ExportError
from mrdeploy.runtime.backends.base import Engine
from mrdeploy.runtime.backends.registry import Backend, BuiltProfile, ProfileBuild
from mrdeploy.runtime.manifest import ProfileEntry

INSTALL = "pip install 'mrdeploy[openvino]'"
HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}  # INFERENCE_PRECISION_HINT per manifest precision
BF16_TOLERANCES = (0.1, 0.1, 0.99)  # (atol, rtol, min cosine) of a bf16 IR against the fp32 source
# an int8 IR against ONNX Runtime running the same Q/DQ model, on random inputs: each requantization may
# round one step apart in the two runtimes' kernels, and a deep net accumulates it (example CNN: max abs
# 0.006, cosine 0.9999998; EfficientNet-Lite1 at 224: max abs 0.13 on logits, cosine 0.9994). The check
# catches a broken conversion (layout, shapes, quantization semantics), so it rests on the cosine.
INT8_TOLERANCES = (0.5, 1.0, 0.99)
# a bf16 IR held to --max-drop: its accuracy is judged on held-out real data right after; on random
# inputs bf16's 8-bit mantissa puts some logits of a deep net past 0.1 and 10% (EfficientNet-Lite1 at
# 160 on an AMX CPU: max abs 0.218, 9 of 1000 values, cosine 0.9991; BENCHMARKS §8, eighth run), so this
# check too only catches a broken conversion
HELD_BF16_TOLERANCES = INT8_TOLERANCES


def installed_version() -> str | None:
    """The installed openvino distribution's version, without importing it (None: not installed)."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        return importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        import openvino

        return str(getattr(openvino, "__version__", "unknown"))


def _major(version: str | None) -> str:
    return str(version or "").split(".", 1)[0].split("-", 1)[0]


def import_openvino():
    try:
        import openvino as ov
    except ImportError as e:
        raise BackendUnavailable(f"the openvino backend needs OpenVINO: {INSTALL} ({e})") from None
    return ov


_CORE = None
_CORE_LOCK = threading.Lock()


def core():
    """One ``openvino.Core`` per process (it holds the device plugins)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = import_openvino().Core()
        return _CORE


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def streams_for(threads: int) -> int:
    """How many OpenVINO streams a compiled profile gets when each call runs on ``threads`` threads: as many
    as the usable cores hold, so concurrent callers (several Runner threads, the Batcher's workers) run side
    by side as they do on ONNX Runtime, where each concurrent ``run`` takes its own intra-op threads. One
    stream would queue them: measured on Lite1 at 96x96, one thread per call, two calling threads, 211
    calls/s with one stream against 361 with two. A single caller runs on one stream, with ``threads``."""
    return max(1, usable_cores() // max(1, threads))


def compile_ir(model, precision: str, threads: int | None):
    """Compile an IR path or ov.Model on the CPU with the latency hint, the precision and, when ``threads`` is
    given, that many threads per call and :func:`streams_for` streams (None: OpenVINO's latency default,
    one stream on every core)."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": HINTS[precision]}
    if threads:
        streams = streams_for(int(threads))
        config.update(NUM_STREAMS=streams, INFERENCE_NUM_THREADS=streams * int(threads))
    return core().compile_model(model if not isinstance(model, Path) else str(model), "CPU", config)


def cpu_has_bf16() -> bool:
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OvEngine(Engine):
    """A profile's IR compiled on the CPU; ``run`` is thread-safe (a pool of InferRequests)."""

    backend = "openvino"

    def __init__(self, path: Path, entry: ProfileEntry, build: Mapping | None = None, threads: int | None = None):
        super().__init__(path, entry, build)
        OpenVINOBackend.check_loadable(entry, self.build)
        if entry.precision not in HINTS:
            raise BundleError(
                f"profile {entry.name!r}: precision {entry.precision!r} is not an OpenVINO precision, expected "
                f"one of {', '.join(HINTS)}"
            )
        if threads is None:
            threads = entry.options.get("threads")
        bins = [f["path"] for f in entry.files if f["path"].endswith(".bin")]
        try:
            # the IR's constants: its own .bin, or the bundle's shared weights file (exporter/weights.py)
            model = core().read_model(str(path), str(self.file(bins[0]))) if bins else Path(path)
            self.compiled = compile_ir(model, entry.precision, threads)
        except RuntimeError as e:  # OpenVINO raises RuntimeError for unreadable or inconsistent IR
            raise BundleError(f"profile {entry.name!r}: OpenVINO cannot load {path}: {str(e).strip()[:400]}") from None
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]
        self.input_dtypes = {p.get_any_name(): np.dtype(p.get_element_type().to_dtype()) for p in self.compiled.inputs}
        self._ports = list(self.compiled.outputs)
        self._idle: list = []
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            request = self._idle.pop() if self._idle else None
        if request is None:
            request = self.compiled.create_infer_request()
        try:
            # share_inputs: the request reads the caller's arrays in place (the call is synchronous, the Runner
            # hands over C-contiguous arrays); share_outputs=False: the outputs are copies, the request is reusable
            res = request.infer(feeds, share_inputs=True)
            outs = {name: res[port] for name, port in zip(self.output_names, self._ports)}
        finally:
            with self._lock:
                self._idle.append(request)
        return outs

    def close(self) -> None:
        with self._lock:
            self._idle.clear()
        self.compiled = None


class _IRSession:
    """An ONNX Runtime-like ``run(names, feeds)`` over a compiled IR, for the build's check."""

    def __init__(self, compiled):
        self.compiled = compiled

    def run(self, names, feeds):
        res = self.compiled.create_infer_request().infer(feeds)
        return [res[self.compiled.output(n)] for n in names]


def _partial_shape(ov, r):
    return ov.PartialShape([ov.Dimension(lo) if lo == hi else ov.Dimension(lo, hi) for lo, hi in zip(r.min, r.max)])


class OpenVINOBackend(Backend):
    """ONNX (fp32 or Q/DQ) -> OpenVINO IR per profile, run by :class:`OvEngine`."""

    name = "openvino"
    engine = OvEngine
    precisions = ("fp32", "bf16", "int8")
    # ORT's uint8-activation Q/DQ; OpenVINO runs it in int8. Measured against the symmetric int8 scheme
    # (TensorRT's) on EfficientNet-Lite1 at 224, minmax on 30 photo crops, 2 threads, median of 5 rounds
    # on the shared 2-core machine: top-1 agreement with fp32 on 60 other crops 0.72 vs 0.63, 19 vs 24 ms.
    qdq_activations = "uint8"
    # 7-bit weights on a CPU without VNNI, as for ONNX Runtime: OpenVINO's int8 kernels there saturate on
    # 8-bit weights as ORT's do. On an AVX2 EPYC, tests/test_openvino.py's int8 bundle (8-bit weights)
    # failed the build's own check of the IR against the Q/DQ model (max abs error 1.03, recorded in the
    # manifest); with 7-bit weights it passes (< 0.05).
    qdq_reduce_range = True
    load_options = ("threads",)
    build_keys = ("openvino",)
    install_hint = f"the openvino backend needs OpenVINO: {INSTALL}"

    @classmethod
    def is_available(cls) -> bool:
        return installed_version() is not None

    @classmethod
    def auto_precisions(cls) -> tuple[str, ...]:
        return ("fp32", "bf16", "int8") if cpu_has_bf16() else ("fp32", "int8")

    @classmethod
    def check_loadable(cls, entry: ProfileEntry, build: Mapping) -> None:
        """BundleError / BackendUnavailable before anything is compiled: OpenVINO missing, or of another major
        version than the one the IR was written with (both versions named)."""
        built = entry.options.get("openvino_version") or build.get("openvino")
        here = installed_version()
        where = f"profile {entry.name!r} ({entry.artifact})"
        if here is None:
            raise BackendUnavailable(
                f"{where}: built with OpenVINO {built or '(unrecorded)'}, but OpenVINO is not installed here: {INSTALL}"
            )
        if not built:
            raise BundleError(f"{where}: the manifest does not record the OpenVINO version the IR was written with")
        if _major(built) != _major(here):
            raise BundleError(
                f"{where}: IR written by OpenVINO {built}, got OpenVINO {here} (another major version); install "
                f"openvino=={_major(built)}.* or rebuild the bundle here with `mrdeploy build-engine --backend openvino`"
            )

    def __init__(self, **settings):
        super().__init__(**settings)
        self.ov = import_openvino()
        if settings.get("precision") == "bf16" and not cpu_has_bf16():
            caps = ", ".join(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            raise BackendUnavailable(
                f"precision bf16: expected a CPU with bf16 instructions (AVX512_BF16 or AMX), got one with {caps}; "
                "build fp32 or int8"
            )

    def build_profile(self, stage: ProfileBuild) -> BuiltProfile:
        import onnx

        from mrdeploy.exporter.build import TOLERANCES

        ov, profile, prec = self.ov, stage.profile, stage.precision
        with tempfile.TemporaryDirectory(prefix="mrdeploy-ov-") as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            onnx.save(stage.model, str(onnx_path))
            try:
                model = ov.convert_model(str(onnx_path))
                model.reshape({name: _partial_shape(ov, r) for name, r in profile.inputs.items()})
            except Exception as e:  # OpenVINO's frontends raise their own exception types
                raise ExportError(f"profile {profile.name!r}: OpenVINO cannot convert the model: {str(e).strip()[:400]}") from None
        xml = f"profiles/{profile.name}.xml"
        ov.save_model(model, str(stage.directory / xml), compress_to_fp16=False)
        compiled = compile_ir(stage.directory / xml, prec, stage.threads)
        if prec == "int8":
            # against the source on random inputs says nothing (they fall outside the calibrated ranges;
            # the Q/DQ model was compared with the source on held-out real data): the IR is checked
            # against ONNX Runtime running the very Q/DQ model it was converted from
            atol, rtol, min_c = INT8_TOLERANCES
            rows = stage.check(_IRSession(compiled), atol, rtol, min_c, what="int8 OpenVINO IR", reference=stage.model)
        else:
            lowered = HELD_BF16_TOLERANCES if stage.held_to_budget else BF16_TOLERANCES
            atol, rtol, min_c = TOLERANCES["fp32"] if prec == "fp32" else lowered
            rows = stage.check(_IRSession(compiled), atol, rtol, min_c, what=f"{prec} OpenVINO IR")
        max_abs = max((r.max_abs for r in rows), default=None)
        min_cos = min((r.cosine for r in rows), default=None)
        options = {
            "threads": int(stage.threads) if stage.threads else 0,
            "inference_precision": HINTS[prec],
            "openvino_version": self.version,
            "check": {"max_abs": max_abs, "min_cosine": min_cos, "atol": atol, "rtol": rtol},
        }
        return BuiltProfile(xml, options, files=[xml[: -len(".xml")] + ".bin"], max_abs=max_abs, min_cosine=min_cos)

    @property
    def version(self) -> str:
        return installed_version() or str(self.ov.__version__)

    def build_info(self) -> dict:
        return {"openvino": self.version}
