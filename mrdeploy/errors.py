"""The one exception type users see: a message that names what was expected and what came.

The CLI prints these without a traceback (unless --verbose) and exits non-zero. Everything here is
importable by the runtime: no torch, no onnx.
"""


class MrdeployError(Exception):
    """A user-facing error. ``str(err)`` is the whole message."""


class ProfileError(MrdeployError):
    """A resolution profile that does not parse or breaks the model's constraints."""


class BundleError(MrdeployError):
    """A bundle that cannot be served: missing or changed artifact, unknown format, wrong engine."""


class InputError(MrdeployError):
    """An input the runner cannot serve: wrong rank, channels, dtype, NaN/Inf, size outside every profile."""


class ExportError(MrdeployError):
    """torch -> ONNX failed, or the exported model is wrong at some resolution."""


class CalibrationError(MrdeployError):
    """INT8 calibration could not produce a model within the accuracy budget, or its data is unusable."""


class OutputError(MrdeployError):
    """An output path that holds something mrdeploy may not replace (it replaces only what it wrote)."""


class BackendUnavailable(MrdeployError):
    """A backend (TensorRT, a CUDA GPU, an execution provider) is not installed or present here."""
