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


def test_parity_and_bench_close_their_runner_and_leave_the_manifest_alone(tmp_path, monkeypatch):
    from mrdeploy.bench import bench
    from mrdeploy.parity import parity
    from mrdeploy.references import quiet_manifest
    from mrdeploy.runtime import Manifest, Runner
    from tests.bundles import make_bundle

    bundle = make_bundle(tmp_path / "cls", "cls")
    manifest = Manifest.read(bundle)
    before = [dict(e.options) for e in manifest.profiles]
    quiet = quiet_manifest(manifest)
    assert [e.options for e in manifest.profiles] == before  # a copy, not the manifest's entries
    assert all(e.options["session_config"]["session.intra_op.allow_spinning"] == "0"
               for e in quiet.profiles if e.backend == "onnxruntime")
    closed = []
    real_close = Runner.close
    monkeypatch.setattr(Runner, "close", lambda self: (closed.append(self), real_close(self)))
    parity(bundle, sizes="48", samples=2)
    bench(bundle, sizes="48", runs=1, warmup=0, threads=1)
    assert len(closed) == 2


def test_unknown_policy_is_one_error_type(tmp_path):
    import json

    from mrdeploy.errors import BundleError, PolicyError
    from mrdeploy.runtime import Manifest, load
    from mrdeploy.runtime.dispatch import check_policy
    from tests.bundles import make_bundle

    bundle = make_bundle(tmp_path / "cls", "cls")
    with pytest.raises(PolicyError, match="unknown policy 'crop'"):
        check_policy("crop")
    with pytest.raises(PolicyError, match="unknown policy 'crop'"):
        load(bundle, policy="crop")
    with load(bundle) as runner, pytest.raises(PolicyError, match="unknown policy 'crop'"):
        runner.select(1, 48, 48, policy="crop")
    d = json.loads((bundle / "manifest.json").read_text())
    d["policy"] = "crop"
    with pytest.raises(PolicyError, match="unknown policy 'crop'") as e:
        Manifest.from_dict(d)
    assert isinstance(e.value, BundleError) and isinstance(e.value, InputError)
