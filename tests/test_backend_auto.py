"""``build-engine --backend auto``: every candidate this machine runs is built and timed per profile, the
fastest within the budget is kept, and the manifest and ``inspect`` say why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mrdeploy.runtime as rt
from mrdeploy.cli import main
from mrdeploy.errors import CalibrationError, ExportError
from mrdeploy.exporter.auto import Candidate, choose
from mrdeploy.runtime.backends.registry import get_backend
from mrdeploy.runtime.manifest import Manifest, verify_artifacts

HAVE_OV = get_backend("openvino").is_available()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    from examples.data import write_image_folder

    root = tmp_path_factory.mktemp("auto_digits")
    write_image_folder(root, n=24, sizes=[(48, 48), (64, 64), (80, 80)], kind="digits", seed=4)
    return root


@pytest.fixture(scope="module")
def auto_bundle(exported, digits, tmp_path_factory, request) -> tuple[Path, object]:
    from mrdeploy.exporter import build as build_mod

    real = build_mod.build_bundle

    def refusing(model, out, profiles, **kw):  # one candidate refused, as a budget that cannot be met is
        if kw.get("backend") == "openvino" and kw.get("precision") == "int8":
            raise CalibrationError("profile 's': --max-drop 0.03 cannot be met (test)")
        return real(model, out, profiles, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(build_mod, "build_bundle", refusing)
    try:
        out = tmp_path_factory.mktemp("auto") / "b"
        result = real(exported("cnn"), out, ["s=48", "r=64-96@80"], backend="auto", precision="auto",
                      calib_data=digits, calib_samples=6, threads=1, quiet=True)
    finally:
        mp.undo()
    return out, result


def test_every_candidate_is_timed_and_the_fastest_kept(auto_bundle):
    path, result = auto_bundle
    manifest = Manifest.read(path)
    verify_artifacts(path, manifest)
    expected = {("onnxruntime", "fp32", False), ("onnxruntime", "fp32", True), ("onnxruntime", "int8", False)}
    if HAVE_OV:
        expected |= {("openvino", "fp32", False)}
        if "bf16" in get_backend("openvino").auto_precisions():  # a CPU with bf16 instructions
            expected |= {("openvino", "bf16", False)}
    for e in manifest.profiles:
        auto = e.measurements["auto"]
        rows = auto["candidates"]
        timed = [r for r in rows if "refused" not in r]
        assert {(r["backend"], r["precision"], r["source_model"]) for r in timed} == expected
        for r in timed:
            assert r["ms"]["opt"] > 0 and r["score_ms"] > 0
            assert set(r["ms"]) == ({"opt"} if e.name == "s" else {"opt", "min", "max"})
            assert (r.get("drop") is not None) == (r["precision"] == "int8")
        if HAVE_OV:
            refused = [r for r in rows if "refused" in r]
            assert refused == [{"backend": "openvino", "precision": "int8", "source_model": False,
                                "refused": "profile 's': --max-drop 0.03 cannot be met (test)"}]
        # the rule, recomputed from what the manifest recorded
        best = min(timed, key=lambda r: r["score_ms"])
        fp32 = min((r for r in timed if r["precision"] == "fp32"), key=lambda r: r["score_ms"])
        if best["precision"] != "fp32" and fp32["score_ms"] / best["score_ms"] < 1.05:
            best = fp32
        assert (e.backend, e.precision) == (best["backend"], best["precision"])
        assert auto["choice"].startswith(f"{e.backend} {e.precision}")
        assert e.options.get("source_model", False) == best["source_model"]
        if best["source_model"]:
            assert e.artifact == "model.onnx"
    assert any(n.startswith("s: ") for n in result.notes) and any(n.startswith("r: ") for n in result.notes)
    if HAVE_OV:
        assert "candidate openvino int8 refused: profile 's': --max-drop 0.03 cannot be met (test)" in result.notes
        assert manifest.build["openvino"] and manifest.build["onnxruntime"]


def test_the_auto_bundle_serves_and_inspect_shows_the_choice(auto_bundle, capsys):
    path, _ = auto_bundle
    x = np.random.default_rng(0).standard_normal((1, 3, 72, 72)).astype(np.float32)
    with rt.load(path) as runner:
        y = runner(x)
        assert y.shape == (1, 10) and np.isfinite(y).all()
        assert runner.last_decision.profile.name == "r"
    main(["inspect", str(path)])
    text = capsys.readouterr().out
    assert text.count("auto: ") == 2
    assert "onnxruntime fp32 (source model)" in text and "onnxruntime int8" in text
    if HAVE_OV:
        assert "openvino int8                    refused: profile 's': --max-drop 0.03 cannot be met (test)" in text


def test_choice_rule_needs_a_real_gain_for_a_lower_precision():
    def cand(backend, precision, ms, source=False):
        c = Candidate(backend, precision, source)
        c.ms = {"opt": ms}
        return c

    fp32, src = cand("onnxruntime", "fp32", 10.0), cand("onnxruntime", "fp32", 9.0, source=True)
    best, why = choose([fp32, src, cand("openvino", "int8", 8.8)], 1.05)
    assert best is src and why == ("openvino int8 is only 1.02x onnxruntime fp32 (source model) (< 1.05x needed "
                                   "for a lower precision): fastest fp32 kept")
    int8 = cand("openvino", "int8", 4.5)
    best, why = choose([fp32, src, int8], 1.05)
    assert best is int8 and why == "fastest: 4.500 ms, 2.00x the fastest fp32 (onnxruntime fp32 (source model))"
    best, why = choose([fp32, src], 1.05)
    assert best is src and why == "fastest: 9.000 ms, 1.11x faster than onnxruntime fp32"
    ranged = cand("openvino", "fp32", 0)
    ranged.ms = {"opt": 4.0, "min": 1.0, "max": 16.0}
    assert ranged.score == pytest.approx(4.0)  # geometric mean over the shapes timed


def test_cli_fp32_only_and_a_precision_no_backend_builds(exported, tmp_path, capsys):
    out = tmp_path / "b"
    main(["build-engine", str(exported("cnn")), "-o", str(out), "--profile", "s=48", "--backend", "auto",
          "--precision", "fp32", "--threads", "1", "-q"])
    printed = capsys.readouterr().out
    e = Manifest.read(out).profiles[0]
    rows = e.measurements["auto"]["candidates"]
    assert {r["precision"] for r in rows} == {"fp32"} and e.precision == "fp32"
    assert f"s: {e.measurements['auto']['choice']}: " in printed
    json.loads((out / "manifest.json").read_text())
    if get_backend("tensorrt").is_available():  # pragma: no cover - a TensorRT GPU builds fp16
        return
    with pytest.raises(ExportError) as info:  # no backend here builds fp16: refused before any work
        build_engine_auto(exported("cnn"), tmp_path / "c", precision="fp16")
    assert str(info.value).startswith("--backend auto: no backend available here builds precision 'fp16'; ")
    assert "backend onnxruntime does not build fp16 on this machine" in str(info.value)
    assert not (tmp_path / "c").exists()


def build_engine_auto(model, out, **kw):
    from mrdeploy.exporter.build import build_bundle

    return build_bundle(model, out, ["s=48"], backend="auto", quiet=True, **kw)


def test_an_engine_that_does_not_load_is_a_refused_candidate(exported, tmp_path, monkeypatch):
    from mrdeploy.errors import BundleError
    from mrdeploy.exporter import auto

    real = auto._engine

    def engine(c, entry, threads):
        if c.source:
            raise BundleError("profile 's': ONNX Runtime cannot load model.onnx: test")
        return real(c, entry, threads)

    monkeypatch.setattr(auto, "_engine", engine)
    result = build_engine_auto(exported("cnn"), tmp_path / "b", precision="fp32", threads=1)
    rows = Manifest.read(tmp_path / "b").profiles[0].measurements["auto"]["candidates"]
    source = [r for r in rows if r["source_model"]]
    assert source == [{"backend": "onnxruntime", "precision": "fp32", "source_model": True,
                       "refused": "profile 's': the engine does not load: profile 's': ONNX Runtime cannot "
                                  "load model.onnx: test"}]
    assert any(n.startswith("candidate onnxruntime fp32 (source model) refused: ") for n in result.notes)
    monkeypatch.setattr(auto, "_engine", lambda c, entry, threads: (_ for _ in ()).throw(BundleError("nope")))
    with pytest.raises(ExportError, match=r"--backend auto: profile 's': no candidate's engine loads: "
                                          r"onnxruntime fp32: profile 's': the engine does not load: nope"):
        build_engine_auto(exported("cnn"), tmp_path / "c", precision="fp32", threads=1)
    assert not (tmp_path / "c").exists()


def test_a_profile_refused_by_the_budget_is_served_by_another_candidate(exported, digits, tmp_path, monkeypatch):
    """An INT8 candidate that misses --max-drop at one profile still competes at the others; a profile
    that no candidate can serve within the budget fails the build, naming it."""
    from mrdeploy.calibration import build_hook
    from mrdeploy.errors import BudgetError
    from mrdeploy.exporter import auto
    from mrdeploy.exporter.build import build_bundle

    real = build_hook.calibrate_profile

    def budget(fp32_path, profile, *a, **kw):
        if profile.name == "r":
            raise BudgetError(f"profile {profile.name}: --max-drop 0.01 (top1) cannot be met (test)")
        return real(fp32_path, profile, *a, **kw)

    monkeypatch.setattr(build_hook, "calibrate_profile", budget)
    monkeypatch.setattr(auto, "candidate_kinds", lambda p: ([("onnxruntime", "fp32"), ("onnxruntime", "int8")], []))
    result = build_bundle(exported("cnn"), tmp_path / "b", ["s=48", "r=64"], backend="auto", precision="auto",
                          calib_data=digits, calib_samples=6, max_drop=0.01, threads=1, quiet=True)
    manifest = Manifest.read(tmp_path / "b")
    verify_artifacts(tmp_path / "b", manifest)
    r = manifest.entry("r")
    assert (r.backend, r.precision) == ("onnxruntime", "fp32")
    rows = r.measurements["auto"]["candidates"]
    assert {"backend": "onnxruntime", "precision": "int8", "source_model": False,
            "refused": "profile r: --max-drop 0.01 (top1) cannot be met (test)"} in rows
    assert all("refused" not in row for row in rows if row["precision"] == "fp32")
    s_rows = manifest.entry("s").measurements["auto"]["candidates"]
    assert [row["precision"] for row in s_rows if not row["source_model"]] == ["fp32", "int8"]
    assert all("refused" not in row for row in s_rows)  # the int8 engine of s was built and timed
    assert "r: candidate onnxruntime int8 refused: profile r: --max-drop 0.01 (top1) cannot be met (test)" in result.notes
    monkeypatch.setattr(auto, "candidate_kinds", lambda p: ([("onnxruntime", "int8")], []))
    with pytest.raises(ExportError, match=r"--backend auto: profile 'r': every candidate was refused: "
                                          r"onnxruntime int8: profile r: --max-drop 0.01 \(top1\) cannot be met"):
        build_bundle(exported("cnn"), tmp_path / "c", ["s=48", "r=64"], backend="auto", precision="int8",
                     calib_data=digits, calib_samples=6, max_drop=0.01, threads=1, quiet=True)
    assert not (tmp_path / "c").exists()


def test_an_engine_that_fails_its_check_at_one_profile_is_refused_there_only(exported, digits, tmp_path, monkeypatch):
    from mrdeploy.exporter import auto
    from mrdeploy.exporter.build import build_bundle
    from mrdeploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    real = OnnxRuntimeBackend.build_profile
    message = "profile 'r': the int8 specialized model does not match the source ONNX model (test)"

    def build_profile(self, stage):
        if stage.profile.name == "r" and stage.precision == "int8":
            raise ExportError(message)
        return real(self, stage)

    monkeypatch.setattr(OnnxRuntimeBackend, "build_profile", build_profile)
    monkeypatch.setattr(auto, "candidate_kinds", lambda p: ([("onnxruntime", "fp32"), ("onnxruntime", "int8")], []))
    build_bundle(exported("cnn"), tmp_path / "b", ["s=48", "r=64"], backend="auto", precision="auto",
                 calib_data=digits, calib_samples=6, threads=1, quiet=True)
    manifest = Manifest.read(tmp_path / "b")
    assert manifest.entry("r").precision == "fp32"
    assert {"backend": "onnxruntime", "precision": "int8", "source_model": False,
            "refused": message} in manifest.entry("r").measurements["auto"]["candidates"]
    assert all("refused" not in row for row in manifest.entry("s").measurements["auto"]["candidates"])


def test_a_candidate_refused_at_every_profile_records_each_profiles_own_reason(exported, digits, tmp_path, monkeypatch):
    from mrdeploy.exporter import auto
    from mrdeploy.exporter.build import build_bundle
    from mrdeploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    real = OnnxRuntimeBackend.build_profile

    def build_profile(self, stage):
        if stage.precision == "int8":
            raise ExportError(f"profile {stage.profile.name!r}: the int8 model does not match (test)")
        return real(self, stage)

    monkeypatch.setattr(OnnxRuntimeBackend, "build_profile", build_profile)
    monkeypatch.setattr(auto, "candidate_kinds", lambda p: ([("onnxruntime", "fp32"), ("onnxruntime", "int8")], []))
    result = build_bundle(exported("cnn"), tmp_path / "b", ["s=48", "r=64"], backend="auto", precision="auto",
                          calib_data=digits, calib_samples=6, threads=1, quiet=True)
    manifest = Manifest.read(tmp_path / "b")
    for name in ("s", "r"):
        rows = [row for row in manifest.entry(name).measurements["auto"]["candidates"] if row["precision"] == "int8"]
        assert rows == [{"backend": "onnxruntime", "precision": "int8", "source_model": False,
                         "refused": f"profile {name!r}: the int8 model does not match (test)"}]
    assert ("candidate onnxruntime int8 refused: every profile was refused: profile 's': the int8 model does not "
            "match (test); profile 'r': the int8 model does not match (test)") in result.notes
