"""Backends: one Engine interface (base.py), ONNX Runtime (onnxruntime.py), TensorRT (tensorrt.py).

Backend libraries are imported when an engine is created, never when this package is imported.
"""

from mrdeploy.runtime.backends.base import Engine, backend_names, get_engine_class, register_backend

__all__ = ["Engine", "backend_names", "get_engine_class", "register_backend"]
