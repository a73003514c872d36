"""The ONNX Runtime backend: one InferenceSession per profile's specialized model.

``onnxruntime`` is imported when the first engine loads, never at ``import mrdeploy.runtime``.

Session options come from the profile's ``options`` in the manifest (flat keys, or under ``"session"``):
``intra_op_num_threads``, ``inter_op_num_threads``, ``graph_optimization_level`` ("disable", "basic",
"extended", "all" or ORT's enum names such as "ORT_ENABLE_ALL"), ``execution_mode`` ("sequential",
"parallel"), ``enable_mem_pattern``, ``enable_cpu_mem_arena``, ``session_config`` (a dict passed to
``add_session_config_entry``). The ``threads`` argument of ``load`` overrides ``intra_op_num_threads``.

Providers: CPU by default. ``providers=["cuda"]`` or ``["tensorrt", "cuda"]`` (or ORT's full names)
ask for those; a provider that is not installed is a BackendUnavailable error naming what is. The
TensorRT provider gets ``trt_profile_min_shapes/opt/max`` from the profile (``trt_profile_shapes``),
``trt_fp16_enable`` for fp16 profiles, and any ``options["provider_options"][name]`` the builder recorded.

Every session gets ``session.force_spinning_stop=1`` (``SESSION_DEFAULTS``; a profile's recorded
``session_config`` overrides it): its pool threads spin during a call, for fast parallel sections, and
stop when the call returns. ONNX Runtime's default keeps them spinning after the call. A Runner holds one
session per profile and a mixed stream alternates between them; the threads of the session just left
then spin on the cores the next session's call needs: on EfficientNet-Lite1 with 2 threads and three
profiles, a Runner serving a mixed stream ran 1.8x-2.2x slower per call with the default than with the
stop (benchmarks/bench_mixed.py, docs/BENCHMARKS.md section 10).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mrdeploy.errors import BackendUnavailable, BundleError
from mrdeploy.runtime.backends.base import Engine, numpy_dtype
from mrdeploy.runtime.backends.registry import Backend, BuiltProfile, ProfileBuild
from mrdeploy.runtime.manifest import ProfileEntry
from mrdeploy.runtime.profiles import Profile

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}

# the profile options a session is made from (session_options, provider_list); the rest are build records
SESSION_KEYS = ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level", "execution_mode",
                "enable_mem_pattern", "enable_cpu_mem_arena", "session_config", "provider_options")
SESSION_DEFAULTS = {"session.force_spinning_stop": "1"}  # config entries every serving session gets

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "none": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def trt_profile_shapes(profile: Profile) -> dict[str, str]:
    """The TensorRT execution provider's explicit profile options for one profile, e.g.
    ``{"trt_profile_min_shapes": "input:1x3x96x96", "trt_profile_opt_shapes": ..., "trt_profile_max_shapes": ...}``
    (several inputs are comma-separated)."""
    out = {}
    for which in ("min", "opt", "max"):
        out[f"trt_profile_{which}_shapes"] = ",".join(
            f"{name}:{_shape_text(getattr(r, which))}" for name, r in profile.inputs.items()
        )
    return out


def provider_names(providers: Sequence[str] | str | None) -> list[str]:
    """User spellings ('cuda', 'tensorrt,cuda', full ORT names) -> ORT provider names, CPU last as fallback."""
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p.strip()]
    names = [PROVIDER_ALIASES.get(p.strip().lower(), p.strip()) for p in providers]
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return list(dict.fromkeys(names))


def _options(entry: ProfileEntry) -> dict:
    o = dict(entry.options or {})
    session = o.pop("session", None)
    if isinstance(session, Mapping):
        o.update(session)
    return o


def session_options(entry: ProfileEntry, threads: int | None = None):
    """An ``onnxruntime.SessionOptions`` from the profile's recorded options (see the module docstring)."""
    import onnxruntime as ort

    o = _options(entry)
    so = ort.SessionOptions()
    intra = threads if threads is not None else o.get("intra_op_num_threads")
    if intra is not None:
        so.intra_op_num_threads = int(intra)
    if o.get("inter_op_num_threads") is not None:
        so.inter_op_num_threads = int(o["inter_op_num_threads"])
    level = o.get("graph_optimization_level")
    if level is not None:
        key = _OPT_LEVELS.get(str(level).lower(), str(level))
        if not hasattr(ort.GraphOptimizationLevel, key):
            raise BundleError(
                f"profile {entry.name!r}: unknown graph_optimization_level {level!r}, expected one of "
                f"{', '.join(_OPT_LEVELS)}"
            )
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, key)
    mode = o.get("execution_mode")
    if mode is not None:
        so.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if str(mode).lower() in ("parallel", "ort_parallel")
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
    if o.get("enable_mem_pattern") is not None:
        so.enable_mem_pattern = bool(o["enable_mem_pattern"])
    if o.get("enable_cpu_mem_arena") is not None:
        so.enable_cpu_mem_arena = bool(o["enable_cpu_mem_arena"])
    for key, value in {**SESSION_DEFAULTS, **(o.get("session_config") or {})}.items():
        so.add_session_config_entry(str(key), str(value))
    so.log_severity_level = 3  # errors only: ORT's warnings go to stderr otherwise
    return so


def provider_list(entry: ProfileEntry, providers: Sequence[str] | str | None) -> list:
    """ORT ``providers=`` argument: names with their options, checked against what is installed."""
    import onnxruntime as ort

    names = provider_names(providers)
    available = ort.get_available_providers()
    missing = [n for n in names if n not in available]
    if missing:
        raise BackendUnavailable(
            f"ONNX Runtime provider(s) {', '.join(missing)} not available here; installed: "
            f"{', '.join(available)} (CUDA/TensorRT providers need onnxruntime-gpu and a CUDA GPU)"
        )
    recorded = (_options(entry).get("provider_options") or {})
    out: list = []
    for n in names:
        opts = dict(recorded.get(n) or {})
        if n == "TensorrtExecutionProvider":
            opts = {**trt_profile_shapes(entry.profile), **opts}
            if entry.precision == "fp16":
                opts.setdefault("trt_fp16_enable", True)
        out.append((n, opts) if opts else n)
    return out


class OrtEngine(Engine):
    """A profile's ONNX model in an ``onnxruntime.InferenceSession`` (thread-safe ``run``)."""

    backend = "onnxruntime"

    def __init__(
        self,
        path: Path,
        entry: ProfileEntry,
        build: Mapping | None = None,
        providers=None,
        threads: int | None = None,
    ):
        super().__init__(path, entry, build)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(
                "the onnxruntime backend needs ONNX Runtime: pip install onnxruntime (or mrdeploy[runtime])"
            ) from None
        so = session_options(entry, threads)
        plist = provider_list(entry, providers)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=plist)
        except Exception as e:  # ORT raises its own exception types (InvalidProtobuf, Fail, ...)
            raise BundleError(
                f"profile {entry.name!r}: ONNX Runtime cannot load {path}: {str(e).strip()[:400]}"
            ) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_dtypes = {i.name: numpy_dtype(i.type) for i in self.session.get_inputs()}
        self.providers = self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self.session = None


class OnnxRuntimeBackend(Backend):
    """The embedded default: per profile, the specialized ONNX model (fp16: cast, int8: the Q/DQ model)
    saved as ``profiles/<name>.onnx`` and served by :class:`OrtEngine`."""

    name = "onnxruntime"
    engine = OrtEngine
    precisions = ("fp32", "fp16", "int8")
    qdq_activations = "uint8"  # asymmetric uint8: ORT's fast CPU kernels (symmetric int8 runs slower than FP32)
    qdq_reduce_range = True
    auto_measured = True
    check_fp32_first = False  # the artifact itself is checked against the source
    load_options = ("providers", "threads")
    install_hint = "pip install 'mrdeploy[runtime]'"

    @classmethod
    def is_available(cls) -> bool:
        import importlib.util

        return importlib.util.find_spec("onnxruntime") is not None

    @classmethod
    def engine_key(cls, entry: ProfileEntry, options: Mapping):
        """Profiles whose session would be the same (same file, precision and session options) share one;
        not under the TensorRT provider, which builds for the profile's own shapes."""
        if "TensorrtExecutionProvider" in provider_names(options.get("providers")):
            return None
        session = {k: v for k, v in _options(entry).items() if k in SESSION_KEYS}
        return (entry.artifact, entry.sha256, tuple(f["path"] for f in entry.files), entry.precision,
                repr(sorted(session.items())))

    def build_profile(self, stage: ProfileBuild) -> BuiltProfile:
        import onnx

        from mrdeploy.errors import ExportError
        from mrdeploy.exporter.build import TOLERANCES
        from mrdeploy.exporter.specialize import session_settings

        model, prec, profile = stage.model, stage.precision, stage.profile
        if prec == "fp16":
            from mrdeploy.exporter.fp16 import convert_to_fp16

            model = convert_to_fp16(model)
        atol, rtol, min_c = TOLERANCES.get("fp32" if prec == "int8" else prec, (5e-2, 5e-2, 0.99))
        if prec == "int8" or (prec == "fp32" and stage.fp32_rows is not None):
            # int8: random inputs fall outside the calibrated ranges; the fp32 model was checked, the Q/DQ
            # model on held-out real data against the source (calibration's drop and --max-drop)
            rows = stage.fp32_rows
        else:
            rows = stage.check(model, atol, rtol, min_c)
        max_abs = max((r.max_abs for r in rows), default=None)
        min_cos = min((r.cosine for r in rows), default=None)
        artifact = f"profiles/{profile.name}.onnx"
        try:
            onnx.save(model, str(stage.directory / artifact))
        except ValueError as e:  # protobuf's 2 GB limit
            raise ExportError(f"profile {profile.name!r}: the specialized model cannot be saved: {e}") from None
        options = session_settings(profile, stage.threads)
        if prec == "int8":
            from mrdeploy.calibration.evaluate import INT8_SESSION_CONFIG

            options["session"]["session_config"] = dict(INT8_SESSION_CONFIG)
        options["check"] = {"max_abs": max_abs, "min_cosine": min_cos, "atol": atol, "rtol": rtol}
        return BuiltProfile(artifact, options, max_abs=max_abs, min_cosine=min_cos)
