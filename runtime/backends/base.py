"""One interface for every backend's run side (MMDeploy-style wrapper): an Engine runs one profile's artifact.

Each backend is one :class:`~mrdeploy.runtime.backends.registry.Backend` class in the registry
(``registry.py``); its ``engine`` names the Engine subclass here, imported when an engine of that
backend is first created, so a backend's own library (onnxruntime, tensorrt, openvino) is imported only
when one of its engines loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mrdeploy.errors import BundleError
from mrdeploy.runtime.backends.registry import (
    backend_names,
    check_backend_name,
    get_backend,
    register_backend,
)
from mrdeploy.runtime.manifest import ProfileEntry

__all__ = ["Engine", "backend_names", "get_engine_class", "numpy_dtype", "register_backend"]


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

    def __init__(self, path: Path, entry: ProfileEntry, build: Mapping | None = None, **options):
        """``build`` is the manifest's build block (versions the bundle was built with); ``options`` are
        the load() keywords the backend declares in ``Backend.load_options`` (providers, threads, ...)."""
        self.path = Path(path)
        self.entry = entry
        self.build = dict(build or {})

    def file(self, rel: str) -> Path:
        """One of the profile's further ``files`` (bundle-relative, as the manifest names it): found from the
        artifact's path, which is the bundle directory joined with ``entry.artifact``."""
        depth = len(Path(self.entry.artifact).parts)
        return self.path.parents[depth - 1] / rel

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


def get_engine_class(name: str) -> type[Engine]:
    """The Engine class of a registered backend; BundleError for an unknown name. Importing the class does
    not import the backend library (that happens when an engine is created)."""
    check_backend_name(name, "backend", BundleError)
    return get_backend(name).engine_class()


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
