"""torch -> ONNX, graph optimization, engine building per profile.

``from mrdeploy.exporter import export`` (torch and onnx are imported on first use, not here).
"""

from __future__ import annotations

__all__ = ["export", "ExportResult", "SweepError"]


def __getattr__(name: str):
    if name in ("export", "ExportResult"):
        from mrdeploy.exporter import api

        return getattr(api, name)
    if name == "SweepError":
        from mrdeploy.exporter.sweep import SweepError

        return SweepError
    raise AttributeError(f"module 'mrdeploy.exporter' has no attribute {name!r}")
