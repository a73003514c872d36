"""One interface for every backend (MMDeploy-style wrapper): an Engine runs one profile's artifact.

A backend module defines a subclass of ``Engine`` and is registered in ``_BACKENDS`` by module path,
so a backend's own library (onnxruntime, tensorrt) is imported only when one of its engines loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mrdeploy.errors import BackendUnavailable, BundleError
from mrdeploy.runtime.manifest import ProfileEntry

# backend name -> (module, class name)
_BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("mrdeploy.runtime.backends.onnxruntime", "OrtEngine"),
    "tensorrt": ("mrdeploy.runtime.backends.tensorrt", "TrtEngine"),
}


class Engine:
    """Runs one profile's artifact. Subclasses fill ``input_names``, ``output_names`` and
    ``input_dtypes`` in ``__init__`` and implement ``run`` and ``close``.

    ``run`` must be safe to call from several threads at once (ONNX Runtime sessions are; the TensorRT
    engine serializes calls on its execution context).
    """

    backend = "base"
    input_names: list[str]
    output_names: list[str]
    input_dtypes: dict[str, np.dtype]

    def __init__(
        self,
        path: Path,
        entry: ProfileEntry,
        providers=None,
        threads: int | None = None,
        build: Mapping | None = None,
    ):
        """``build`` is the manifest's build block (versions the bundle was built with)."""
        self.path = Path(path)
        self.entry = entry
        self.build = dict(build or {})

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's resources; the engine is unusable afterwards."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.entry.name!r}, {self.path.name})"


def register_backend(name: str, module: str, cls: str) -> None:
    """Add a backend: ``name`` as written in manifests, the module and Engine subclass that serve it."""
    _BACKENDS[name] = (module, cls)


def backend_names() -> list[str]:
    return list(_BACKENDS)


def get_engine_class(name: str) -> type[Engine]:
    """The Engine class of a backend; BundleError for an unknown name. Importing the class does not
    import the backend library (that happens when an engine is created)."""
    if name not in _BACKENDS:
        raise BundleError(f"unknown backend {name!r}: expected one of {', '.join(_BACKENDS)}")
    module, cls = _BACKENDS[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:  # a backend module that needs something at import time
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {e}") from None


def numpy_dtype(type_name: str) -> np.dtype:
    """ONNX Runtime type strings ('tensor(float)') and plain names ('float32') -> numpy dtype."""
    table = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8,
        "tensor(bool)": np.bool_,
    }
    if type_name in table:
        return np.dtype(table[type_name])
    return np.dtype(type_name)
