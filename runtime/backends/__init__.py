"""Backends: the registry (registry.py: one Backend class per backend, building and running), the Engine
interface (base.py), ONNX Runtime (onnxruntime.py), TensorRT (tensorrt.py), OpenVINO (openvino.py).

Backend libraries are imported when an engine is created or a build starts, never when this package is
imported.
"""

from mrdeploy.runtime.backends.base import Engine, get_engine_class
from mrdeploy.runtime.backends.registry import (
    Backend,
    BuiltProfile,
    ProfileBuild,
    backend_names,
    get_backend,
    register_backend,
    unregister_backend,
)

__all__ = [
    "Backend",
    "BuiltProfile",
    "Engine",
    "ProfileBuild",
    "backend_names",
    "get_backend",
    "get_engine_class",
    "register_backend",
    "unregister_backend",
]
