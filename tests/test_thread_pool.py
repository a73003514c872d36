"""Serving sessions stop their pool threads spinning when a call returns (``session.force_spinning_stop``,
runtime/backends/onnxruntime.py), unless the profile's recorded ``session_config`` says otherwise."""

from __future__ import annotations

from mrdeploy.exporter.build import build_bundle
from mrdeploy.runtime.backends import onnxruntime as ortb
from mrdeploy.runtime.manifest import Manifest


def test_sessions_stop_spinning_after_a_call_unless_the_profile_says(exported, tmp_path):
    import mrdeploy.runtime as rt

    path = build_bundle(exported("cnn"), tmp_path / "b", ["m=64"], threads=2, quiet=True).path
    with rt.load(path) as r:
        r.warmup()
        so = r._engines["m"].session.get_session_options()
        assert so.get_session_config_entry("session.force_spinning_stop") == "1"
    entry = Manifest.read(path).profiles[0]
    entry.options["session_config"] = {"session.force_spinning_stop": "0"}
    assert ortb.session_options(entry).get_session_config_entry("session.force_spinning_stop") == "0"
