"""The one backend registry: a backend name -> the one class that builds and runs its artifacts.

A backend is a subclass of :class:`Backend` (MMDeploy's backend-manager idea): its build side
(``builder``, ``build_profile``) may import onnx and its converter lazily; its run side is the
``Engine`` subclass named by ``engine`` (``"module:Class"`` or the class itself), importable with
numpy and the backend's own runtime alone. Registering it is the only step: the manifest validator,
the CLI choices, ``build-engine``, the runtime and the calibration target all read this registry.

Built-in backends are registered by ``"module:Class"`` path, so ``import mrdeploy.runtime`` imports no
backend module; a class is imported when it is first asked for. Pure Python: no numpy here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mrdeploy.errors import BackendUnavailable, MrdeployError

_REGISTRY: dict[str, str | type] = {
    "onnxruntime": "mrdeploy.runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "mrdeploy.runtime.backends.tensorrt:TensorRTBackend",
    "openvino": "mrdeploy.runtime.backends.openvino:OpenVINOBackend",
}


class UnknownBackend(MrdeployError):
    """A backend name that is not registered."""


@dataclass
class ProfileBuild:
    """What one build stage gets: the model to turn into an artifact (the fp32 specialized model, or the
    Q/DQ model for int8), its profile and precision, the bundle's temporary directory, the threads the
    user asked for, ``fp32_rows`` (the fp32 specialized model's check against the source, or None when
    it was not checked) and ``check(candidate, atol, rtol, min_cosine, what=None, reference=None) -> rows``,
    which runs ``candidate`` (a ModelProto, or anything with ONNX Runtime's ``run(names, feeds)``) against
    the source at min/opt/max on random inputs (or against ``reference``, an ONNX model, e.g. the Q/DQ
    model a backend converted) and raises ExportError naming the profile when it does not match.
    ``held_to_budget``: the engine is then scored on held-out real data against ``--max-drop``, which
    judges its accuracy; the random-input check only has to catch a broken conversion."""

    model: object
    profile: object
    precision: str
    directory: Path
    threads: int | None = None
    fp32_rows: list | None = None
    check: object = None
    source_session: object = None
    held_to_budget: bool = False  # fp16/bf16 with --max-drop: the built engine is scored on held-out real data next


@dataclass
class BuiltProfile:
    """What one build stage returns: ``artifact`` (the path the engine loads, relative to the bundle),
    ``files`` (further files it needs, e.g. OpenVINO's .bin; hashed and verified like the artifact),
    ``options`` (the manifest entry's backend options), the check's worst error and cosine, notes."""

    artifact: str
    options: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    max_abs: float | None = None
    min_cosine: float | None = None
    notes: list[str] = field(default_factory=list)


class Backend:
    """One backend: how to build a profile's artifact and how to run it. Subclass, set the class
    attributes, implement :meth:`build_profile` (and :meth:`is_available`), and :func:`register_backend`.

    One instance serves one build (``Backend.builder(**settings)``), so it may hold build state
    (TensorRT's timing cache)."""

    name: str = ""
    engine: str | type = ""  # "module:Class" of the Engine subclass (run side), or the class
    precisions: tuple[str, ...] = ("fp32",)  # what build-engine accepts for this backend
    qdq_activations: str | None = None  # int8: "uint8" (asymmetric) or "int8" (symmetric) Q/DQ activations
    qdq_reduce_range: bool = False  # 7-bit int8 weights on a CPU without VNNI (the u8s8 kernels of ONNX Runtime and OpenVINO)
    auto_measured: bool = False  # precision auto: calibration times fp32 against int8 with this backend
    check_fp32_first: bool = True  # check the fp32 specialized model against the source before building
    load_options: tuple[str, ...] = ()  # load() keywords the engine takes: "providers", "threads"
    build_keys: tuple[str, ...] = ()  # keys this backend adds to the manifest's build block (None otherwise)
    install_hint: str = ""  # what installs it, for BackendUnavailable messages

    def __init__(self, **settings):
        self.settings = settings

    # --- availability ---------------------------------------------------------------------------
    @classmethod
    def is_available(cls) -> bool:
        """Whether this machine can build (and run) this backend's artifacts; cheap, no import of heavy
        libraries beyond a spec lookup where possible."""
        return True

    @classmethod
    def auto_precisions(cls) -> tuple[str, ...]:
        """The precisions ``--backend auto`` builds and times for this backend on this machine (fp32 and
        int8 by default; a backend adds what its hardware runs fast: bf16, fp16)."""
        return tuple(p for p in cls.precisions if p in ("fp32", "int8"))

    @classmethod
    def require(cls) -> None:
        """BackendUnavailable naming what installs the backend, when it is not available."""
        if not cls.is_available():
            hint = f": {cls.install_hint}" if cls.install_hint else ""
            raise BackendUnavailable(f"backend {cls.name!r} is not available here{hint}")

    # --- build side -----------------------------------------------------------------------------
    @classmethod
    def builder(cls, **settings) -> Backend:
        """The backend's builder for one build-engine run (checks availability first)."""
        cls.require()
        return cls(**settings)

    def build_profile(self, stage: ProfileBuild) -> BuiltProfile:
        raise NotImplementedError(f"backend {self.name!r} cannot build artifacts")

    def build_info(self) -> dict:
        """Entries for the manifest's build block (versions, device)."""
        return {}

    def finish(self, directory: Path, build: dict) -> None:
        """After every profile is built: write shared files (e.g. a timing cache) and note them in ``build``."""

    # --- run side -------------------------------------------------------------------------------
    @classmethod
    def check_loadable(cls, entry, build: Mapping) -> None:
        """Called by ``load()`` for every served profile, before any engine loads: raise BundleError /
        BackendUnavailable when this machine cannot load the entry (a runtime of another version). Cheap:
        nothing is imported or compiled."""

    @classmethod
    def engine_key(cls, entry, options: Mapping):
        """What makes an engine of ``entry`` (loaded with the load() ``options``) interchangeable with another
        profile's: profiles with equal keys share one loaded engine (ranged fp32 profiles often specialize to
        one artifact, stored once). None (the default): the engine is the profile's own."""
        return None

    @classmethod
    def engine_class(cls):
        return _resolve(cls.engine, f"backend {cls.name!r} engine")

    @classmethod
    def engine_options(cls, options: Mapping) -> dict:
        """The load() keywords this backend's engine takes, from those the user gave (None dropped)."""
        return {k: v for k, v in options.items() if k in cls.load_options and v is not None}


def _resolve(ref, what: str):
    if isinstance(ref, type):
        return ref
    module, _, attr = str(ref).partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as e:  # a backend module that needs something at import time
        raise BackendUnavailable(f"{what} cannot be imported: {e}") from None


def register_backend(backend: type[Backend] | str, ref: str | None = None) -> None:
    """Register a :class:`Backend` subclass under its ``name`` (or a name and its ``"module:Class"`` path,
    imported when first used). A name registered again is replaced."""
    if isinstance(backend, str):
        if not ref:
            raise TypeError("register_backend(name, 'module:Class'): the class path is missing")
        _REGISTRY[backend] = ref
        return
    if not (isinstance(backend, type) and issubclass(backend, Backend)) or not backend.name:
        raise TypeError(f"register_backend: expected a Backend subclass with a name, got {backend!r}")
    _REGISTRY[backend.name] = backend


def unregister_backend(name: str) -> None:
    _REGISTRY.pop(name, None)


def backend_names() -> list[str]:
    """Every registered backend name (no backend module is imported)."""
    return list(_REGISTRY)


def get_backend(name: str) -> type[Backend]:
    """The Backend class registered as ``name``; UnknownBackend naming the registered ones otherwise."""
    check_backend_name(name)
    cls = _resolve(_REGISTRY[name], f"backend {name!r}")
    _REGISTRY[name] = cls
    return cls


def check_backend_name(name, what: str = "backend", error: type[MrdeployError] = UnknownBackend) -> str:
    """``name`` if it is registered, else ``error`` naming the registered backends (the one copy of the rule)."""
    if name not in _REGISTRY:
        raise error(f"{what}: unknown backend {name!r}, expected one of {', '.join(_REGISTRY)}")
    return name
