"""A profile is never slower than the source model it came from: the build times the specialized graph
against the source wherever the source could serve the profile, and keeps the faster (exporter/source_rule)."""

from __future__ import annotations

import numpy as np
import pytest

import mrdeploy.runtime as rt
from mrdeploy.cli import main
from mrdeploy.exporter import source_rule
from mrdeploy.exporter.build import build_bundle
from mrdeploy.exporter.specialize import cpu_session
from mrdeploy.exporter.timing import shape_kinds
from mrdeploy.runtime.manifest import Manifest, verify_artifacts

PROFILES = ["s=64", "m=96-160@128"]


def _fake_timing(gains: dict[str, float]):
    """A stand-in for time_engines: the source is ``gains[profile]`` times faster than the specialized."""
    def fake(engines, profile):
        kinds = shape_kinds(profile)
        g = gains[profile.name]
        return {"specialized": {k: 2.0 for k in kinds}, "source": {k: 2.0 / g for k in kinds}}
    return fake


def _source_outputs(model, x):
    sess = cpu_session(model, 1)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_every_fp32_profile_is_timed_against_the_source_and_the_faster_kept(exported, tmp_path):
    res = build_bundle(exported("cnn"), tmp_path / "b", PROFILES, threads=1, quiet=True, time_source=True)
    m = Manifest.read(res.path)
    verify_artifacts(res.path, m)
    for e, row in zip(m.profiles, res.profiles):
        rule = e.measurements["source_rule"]
        kinds = {"opt"} if e.name == "s" else {"opt", "min", "max"}
        assert set(rule["specialized_ms"]) == set(rule["source_ms"]) == kinds
        assert all(v > 0 for v in [*rule["specialized_ms"].values(), *rule["source_ms"].values()])
        spec = np.exp(np.mean(np.log(list(rule["specialized_ms"].values()))))
        src = np.exp(np.mean(np.log(list(rule["source_ms"].values()))))
        assert rule["source_gain"] == pytest.approx(spec / src, rel=1e-3)
        won = rule["source_gain"] >= source_rule.MIN_GAIN
        assert rule["kept"] == ("source" if won else "specialized")
        assert e.artifact == ("model.onnx" if won else f"profiles/{e.name}.onnx") == row.artifact
        assert e.options.get("source_model", False) == won


def test_a_faster_source_model_serves_the_profile_and_its_file_is_not_written(exported, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.setattr(source_rule, "time_engines", _fake_timing({"s": 1.25, "m": 1.02}))
    res = build_bundle(exported("cnn"), tmp_path / "b", PROFILES, threads=1, quiet=True, time_source=True)
    m = Manifest.read(res.path)
    verify_artifacts(res.path, m)
    s, mid = m.profiles
    assert (s.artifact, s.sha256, s.files) == ("model.onnx", m.source["sha256"], m.source["files"])
    assert s.options["source_model"] is True and s.measurements["source_rule"]["kept"] == "source"
    assert not (res.path / "profiles/s.onnx").exists()
    assert mid.artifact == "profiles/m.onnx" and mid.measurements["source_rule"]["kept"] == "specialized"
    assert mid.measurements["source_rule"]["source_gain"] == 1.02  # within the noise: specialization kept
    assert ("s: the source model is 1.25x faster than the specialized graph (>= 1.03x): the profile serves "
            "model.onnx") in res.notes
    assert [r.artifact for r in res.profiles] == ["model.onnx", "profiles/m.onnx"]
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with rt.load(res.path) as runner:
        y = runner(x)
        assert runner.last_decision.profile.name == "s"
    np.testing.assert_allclose(y, _source_outputs(str(exported("cnn")), x), rtol=1e-4, atol=1e-5)
    main(["inspect", str(res.path)])
    text = capsys.readouterr().out
    assert "source rule: kept the source graph (source 1.250x the specialized; 1.030x needed)" in text
    assert "source rule: kept the specialized graph (source 1.020x the specialized; 1.030x needed)" in text


def test_no_source_timing_and_profiles_the_source_cannot_serve(exported, tmp_path, monkeypatch, capsys):
    def fail(*a, **k):
        raise AssertionError("timed")

    monkeypatch.setattr(source_rule, "time_engines", fail)
    main(["build-engine", str(exported("cnn")), "-o", str(tmp_path / "b"), "--profile", "s=64",
          "--no-source-timing", "-q"])
    capsys.readouterr()
    e = Manifest.read(tmp_path / "b").profiles[0]
    assert e.artifact == "profiles/s.onnx" and "source_rule" not in (e.measurements or {})
    # an fp16 profile is not an fp32 graph the source could stand in for
    res = build_bundle(exported("cnn"), tmp_path / "h", ["s=64"], precision="fp16", quiet=True, time_source=True)
    e = Manifest.read(res.path).profiles[0]
    assert e.precision == "fp16" and "source_rule" not in (e.measurements or {})
