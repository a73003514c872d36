"""mrdeploy: deploy multi-resolution vision models.

The top-level names load their modules on first use, so ``import mrdeploy`` stays light:

- ``export``        torch -> ONNX with dynamic H/W, checked by a resolution sweep (mrdeploy.exporter)
- ``plan_profiles`` resolution profiles from the sizes real data has (mrdeploy.planning)
- ``build_engine``  one engine per profile, written as a bundle (mrdeploy.exporter.build)
- ``calibrate``     per-profile INT8 (Q/DQ) models (mrdeploy.calibration)
- ``load``          the runtime: a Runner over a bundle (mrdeploy.runtime)
- ``parity``, ``bench``  accuracy parity and latency per resolution
- ``triton``        a Triton model repository for a bundle (mrdeploy.triton: the module, callable)

``mrdeploy.parity`` and ``mrdeploy.bench`` are the submodules, made callable (calling one calls its
function of the same name), so they stay callable after ``mrdeploy.parity`` has been imported.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_LAZY = {
    "export": ("mrdeploy.exporter", "export"),
    "plan_profiles": ("mrdeploy.planning", "plan_profiles"),
    "build_engine": ("mrdeploy.exporter.build", "build_engine"),
    "calibrate": ("mrdeploy.calibration", "calibrate"),
    "load": ("mrdeploy.runtime", "load"),
    "parity": ("mrdeploy.parity", None),  # None: the (callable) module itself
    "bench": ("mrdeploy.bench", None),
    "triton": ("mrdeploy.triton", None),  # the module itself; calling it writes a repository
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'mrdeploy' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """A module that, called, calls its function named like the module (``mrdeploy.parity(...)``)."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def _make_callable(module_name: str) -> None:
    """Called at the end of mrdeploy/parity.py and mrdeploy/bench.py: importing the submodule sets
    ``mrdeploy.parity`` to the module, which must stay callable like the function it shadows."""
    sys.modules[module_name].__class__ = _CallableModule
