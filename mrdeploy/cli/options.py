"""Option groups shared by the commands (Polygraphy's ``tools/args`` idea), and their value parsers.

Each group is a decorator that adds its options to a click command, defined once here:

- :func:`model_options`      ``--model-arg`` (and ``--checkpoint``) for a PyTorch factory
- :func:`reference_options`  ``--reference``/``-r``, ``--checkpoint``, ``--model-arg`` (parity, bench)
- :func:`policy_option`      ``--policy`` (run, parity, bench, build-engine)
- :func:`calibration_options`  ``--calib-data``, ``--calib-method``, ``--calib-samples``, ``--heldout-data``,
  ``--max-drop`` (calibrate, build-engine)
- :func:`report_options`     ``--out``/``-o`` and ``--no-plot`` (parity, bench)
- :func:`force_option`       ``--force`` (every command that writes an output)

Nothing heavy is imported here, so ``mrdeploy --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import click

from mrdeploy.errors import OptionError

POLICY_CHOICES = ("pad", "resize", "letterbox", "error")  # mrdeploy.runtime.dispatch.POLICIES (tested equal)
CALIB_METHODS = ("minmax", "entropy", "percentile")  # mrdeploy.calibration.ranges.METHODS (tested equal)
DEFAULT_CALIB_METHOD = "minmax"  # mrdeploy.calibration.api.DEFAULT_METHOD (tested equal)


def _apply(options: Iterable[Callable]) -> Callable:
    """A decorator applying ``options`` so they show in ``--help`` in the order given."""
    options = list(options)

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


# ------------------------------------------------------------------------------------------------ parsers


def parse_value(text: str):
    """``--model-arg`` values: int, float, true/false, none, JSON lists/dicts, a,b,c lists, else str."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    if t[:1] in "[{":
        try:
            return json.loads(t)
        except json.JSONDecodeError as e:
            raise OptionError(f"model argument value {text!r} looks like JSON but does not parse: {e}") from e
    if "," in t:
        return [parse_value(p) for p in t.split(",")]
    return t


def parse_model_args(items: Iterable[str]) -> dict:
    """``("num_classes=10", "relu=false")`` -> ``{"num_classes": 10, "relu": False}`` (see :func:`parse_value`)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise OptionError(f"--model-arg {item!r} does not parse: expected key=value, e.g. num_classes=10")
        out[key] = parse_value(value)
    return out


# ------------------------------------------------------------------------------------------------ groups


def force_option(help: str) -> Callable:
    return click.option("--force", is_flag=True, help=help)


def policy_option(help: str = "Override the bundle's policy.", default=None) -> Callable:
    return click.option("--policy", type=click.Choice(POLICY_CHOICES), default=default, help=help)


def model_options(checkpoint_help: str = "Weights for the PyTorch reference.",
                  checkpoint_exists: bool = True, model_arg_help: str = "Keyword for the factory.") -> Callable:
    """``--checkpoint`` and ``--model-arg KEY=VALUE`` (parsed with :func:`parse_model_args`)."""
    return _apply([
        click.option("--checkpoint", type=click.Path(exists=checkpoint_exists, dir_okay=False), help=checkpoint_help),
        click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE", help=model_arg_help),
    ])


def reference_options(reference_help: str, checkpoint_help: str) -> Callable:
    """``--reference/-r`` (repeatable) plus :func:`model_options` for a PyTorch reference."""
    return _apply([
        click.option("--reference", "-r", "references", multiple=True, metavar="MODEL.onnx|module:factory",
                     help=reference_help),
        model_options(checkpoint_help),
    ])


def sizes_option(help_what: str = "Sizes to check") -> Callable:
    return click.option(
        "--sizes", metavar="LIST",
        help=f"{help_what}, e.g. 96,128,200x160; several image inputs: template:128+search:256x320 per item "
             "(default: every profile's min/opt/max, between and outside the profiles).")


def report_options(default_dir: str, stem: str) -> Callable:
    """``--out/-o DIR`` for ``<stem>.json/.md/.png`` and ``--no-plot``."""
    return _apply([
        click.option("--out", "-o", type=click.Path(file_okay=False), default=default_dir, show_default=True,
                     help=f"Directory for {stem}.json, {stem}.md and {stem}.png."),
        click.option("--no-plot", is_flag=True, help="Skip the PNG."),
    ])


def calibration_options(data_required: bool, data_help: str) -> Callable:
    """``--calib-data``, ``--calib-method``, ``--calib-samples``, ``--heldout-data``, ``--max-drop``,
    ``--no-bias-correction``: the
    INT8 calibration options of ``calibrate`` and ``build-engine`` (None: the calibrator's default)."""
    return _apply([
        click.option("--calib-data", "calib_data", required=data_required, type=click.Path(), help=data_help),
        click.option("--calib-method", "calib_method", type=click.Choice(CALIB_METHODS), default=None,
                     help=f"INT8 calibration method [default: {DEFAULT_CALIB_METHOD}, which kept the examples "
                          "closest to FP32]."),
        click.option("--calib-samples", "calib_samples", type=click.IntRange(min=1), default=None,
                     help="Calibration samples per profile, each resized to sizes inside the profile "
                          "[default: 64, or all when fewer]."),
        click.option("--heldout-data", type=click.Path(), default=None,
                     help="Held-out images for the accuracy budget, never calibrated on [default: a part of "
                          "--calib-data]."),
        click.option("--max-drop", type=float, default=None,
                     help="Accuracy budget per profile, a fraction in [0, 1): 0.03 = 3 points of top-1 "
                          "agreement with FP32; blocks that break it stay float."),
        click.option("--no-bias-correction", "bias_correction", is_flag=True, flag_value=False, default=True,
                     help="Leave the INT8 biases as quantized (by default each layer's per-channel output "
                          "mean is put back where FP32 has it, on the calibration data)."),
    ])
