"""The shared pieces issue 9 merged: one option parser, one size syntax, one policy list, state restored."""

import pytest

from mrdeploy import _progress
from mrdeploy.cli.options import CALIB_METHODS, DEFAULT_CALIB_METHOD, POLICY_CHOICES, parse_model_args
from mrdeploy.errors import ExportError, InputError, OptionError
from mrdeploy.evaldata import parse_sizes
from mrdeploy.exporter.shapes import parse_sizes as export_sizes


def test_choices_match_their_sources():
    from mrdeploy.calibration.api import DEFAULT_METHOD
    from mrdeploy.calibration.ranges import METHODS
    from mrdeploy.runtime.dispatch import POLICIES

    assert POLICY_CHOICES == POLICIES
    assert CALIB_METHODS == METHODS and DEFAULT_CALIB_METHOD == DEFAULT_METHOD


def test_model_args_one_parser_for_every_command():
    from mrdeploy.cli import bench, export, parity

    assert parse_model_args(["flag=False", "n=3"]) == {"flag": False, "n": 3}  # was "False" in parity/bench
    assert export.parse_model_args is parse_model_args
    assert parity.parse_model_args is parse_model_args and bench.parse_model_args is parse_model_args
    with pytest.raises(OptionError) as e:
        parse_model_args(["width"])
    assert isinstance(e.value, InputError) and isinstance(e.value, ExportError)


def test_one_size_syntax_both_spellings():
    names = ["template", "search"]
    named = parse_sizes("template:128+search:256x320", names)
    assert parse_sizes("128/256x320", names) == named == [{"template": (128, 128), "search": (256, 320)}]
    assert export_sizes("8/32,t:16+s:24") == [((8, 8), (32, 32)), {"t": (16, 16), "s": (24, 24)}]


def test_quiet_progress_is_restored():
    _progress.set_quiet(False)
    with _progress.quiet_progress(True):
        assert _progress._quiet
    assert not _progress._quiet
