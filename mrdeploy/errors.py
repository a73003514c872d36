"""The exception types users see: a message that names what was expected and what came.

The CLI prints these without a traceback (unless --verbose) and exits non-zero. Everything here is
importable by the runtime: no torch, no onnx.

Every error is a :class:`MrdeployError`. The classes are named by the kind of failure, so one failure
raises one type wherever it is detected:

- :class:`OptionError`    a value the user gave (``--model-arg``, a size list, a policy, a threshold
  name) that does not parse or is not one of the choices
- :class:`PolicyError`    an unknown fit policy (an OptionError), from the CLI, the Python API or a manifest
- :class:`ToleranceError` outputs that differ from their reference beyond the tolerance (the export
  sweep's SweepError, parity's ParityFailure, calibration's BudgetError)
- :class:`InputError`, :class:`ProfileError`, :class:`BundleError`, :class:`ExportError`,
  :class:`CalibrationError`, :class:`OutputError`, :class:`BackendUnavailable` as before.

Where a kind used to be raised under a layer's type (a ``--model-arg`` that does not parse was an
ExportError in ``export`` and an InputError in ``parity``), the new class also derives from those
types, so code that caught them still does.
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


class OptionError(InputError, ExportError):
    """An option or keyword value that does not parse or is not one of the choices (also an InputError
    and an ExportError, the types it was raised as before)."""


class PolicyError(OptionError, BundleError):
    """An unknown fit policy (pad / resize / letterbox / error), wherever it was given: an option, a
    keyword, a profiles file or a manifest (also a BundleError, as a manifest's was before)."""


class ToleranceError(MrdeployError):
    """Outputs that differ from their reference beyond the tolerance; ``.report``, where there is one,
    has every number."""


class BudgetError(CalibrationError, ToleranceError):
    """No INT8 model meets the accuracy budget (``--max-drop``): a calibration failure and a tolerance one."""


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message (its type's name when the message is empty): what a note or a
    refusal row shows of a longer error."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
