"""The OpenVINO backend: fp32 and int8 bundles of the example CNN built as IR per profile, served through
``mrdeploy.runtime.load`` and compared with the source ONNX; refusals (not installed, another major
version, a tampered IR file, bf16 on a CPU without it)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

import mrdeploy.runtime as rt  # noqa: E402
from mrdeploy.cli import main  # noqa: E402
from mrdeploy.errors import BackendUnavailable, BundleError, ExportError  # noqa: E402
from mrdeploy.exporter.build import build_bundle  # noqa: E402
from mrdeploy.exporter.specialize import cpu_session  # noqa: E402
from mrdeploy.runtime.backends import openvino as ovb  # noqa: E402
from mrdeploy.runtime.manifest import Manifest, sha256_file, verify_artifacts  # noqa: E402

PROFILES = ["s=32-48@48", "m=64"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from examples.data import write_image_folder

    calib = tmp_path_factory.mktemp("ov_calib")
    write_image_folder(calib, n=24, sizes=[(48, 48), (64, 64), (40, 56)], kind="digits", seed=2)
    held = tmp_path_factory.mktemp("ov_heldout")
    write_image_folder(held, n=24, sizes=[(48, 48), (64, 64)], kind="digits", seed=7)
    return calib, held


@pytest.fixture(scope="module")
def bundles(exported, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov_bundles")
    model = exported("cnn")
    fp32 = build_bundle(model, out / "fp32", PROFILES, backend="openvino", threads=1, quiet=True)
    int8 = build_bundle(model, out / "int8", PROFILES, backend="openvino", precision="int8", calib_data=digits[0],
                        calib_method="minmax", calib_samples=8, threads=1, quiet=True)
    return model, fp32.path, int8.path


def _images(folder, info, size):
    from mrdeploy.runtime.images import image_files, preprocess, read_image

    out = []
    for p in image_files(folder):
        a = preprocess(read_image(p), info)  # 1CHW, normalized
        if a.shape[-2:] == (size, size):
            out.append(a)
    return out


def test_fp32_bundle_matches_the_source_at_exact_sizes(bundles):
    model, path, _ = bundles
    m = Manifest.read(path)
    verify_artifacts(path, m)
    assert m.build["openvino"] == ovb.installed_version()
    for e, shape in zip(m.profiles, ("1,3,32..48,32..48", "1,3,64,64")):
        assert (e.backend, e.precision, e.artifact) == ("openvino", "fp32", f"profiles/{e.name}.xml")
        # both IRs' constants are stored once, in the shared weights file
        assert e.files == [{"path": "profiles/weights.bin", "sha256": sha256_file(path / "profiles/weights.bin")}]
        assert e.options["check"]["max_abs"] < 1e-4 and e.options["inference_precision"] == "f32"
        assert f'shape="{shape}"' in (path / e.artifact).read_text()  # bounded for ranged, static for exact
    assert sorted(p.name for p in (path / "profiles").iterdir()) == ["m.xml", "s.xml", "weights.bin"]
    src = cpu_session(model)
    rng = np.random.default_rng(0)
    with rt.load(path, threads=1) as r:
        for (h, w), name in (((32, 32), "s"), ((32, 48), "s"), ((48, 48), "s"), ((64, 64), "m")):
            x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
            out, info = r.run_with_info(x)
            ref = src.run(None, {"input": x})[0]
            assert (info.decision.profile_name, info.decision.action) == (name, "exact")
            got = next(iter(out.values()))
            assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
        compiled = r._engines["s"].compiled  # compiled as the manifest and load(threads=1) say
        assert compiled.get_property("INFERENCE_NUM_THREADS") == compiled.get_property("NUM_STREAMS")  # 1 per call
        assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
        assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_int8_bundle_agrees_with_the_source_on_real_digits(bundles, digits):
    model, fp32_path, path = bundles
    m = Manifest.read(path)
    assert [e.precision for e in m.profiles] == ["int8", "int8"]
    assert all(e.calibration["target"] == "openvino" and e.calibration["activation_type"] == "uint8 asymmetric"
               for e in m.profiles)
    assert "FakeQuantize" in (path / "profiles/m.xml").read_text()  # OpenVINO runs the Q/DQ model in int8
    # the IR was checked against ONNX Runtime running the Q/DQ model it came from
    assert all(e.options["check"]["min_cosine"] >= 0.999 and e.options["check"]["max_abs"] < 0.05 for e in m.profiles)
    src = cpu_session(model)
    with rt.load(path, threads=1) as r:
        info = r.model.inputs[0]
        for size in (48, 64):
            xs = _images(digits[1], info, size)
            assert len(xs) >= 8
            ref = np.concatenate([src.run(None, {"input": x})[0] for x in xs])
            got = np.concatenate([next(iter(r.run(x).values())) for x in xs])
            agree = float(np.mean(ref.argmax(1) == got.argmax(1)))
            cos = float(np.sum(ref * got) / np.linalg.norm(ref) / np.linalg.norm(got))
            assert agree >= 0.85 and cos >= 0.98, (size, agree, cos)


def test_an_ir_that_does_not_match_stops_the_build(exported, tmp_path, monkeypatch):
    run = ovb._IRSession.run
    monkeypatch.setattr(ovb._IRSession, "run", lambda self, names, feeds: [y + 0.01 for y in run(self, names, feeds)])
    with pytest.raises(ExportError, match="profile 'm': the fp32 OpenVINO IR model does not match the source ONNX model"):
        build_bundle(exported("cnn"), tmp_path / "b", ["m=64"], backend="openvino", quiet=True)
    assert not (tmp_path / "b").exists()


def test_concurrent_calls_give_the_sequential_answers(bundles):
    _, path, _ = bundles
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(12)]
    with rt.load(path, threads=1) as r:
        want = [r(x) for x in xs]
        got = [None] * len(xs)

        def work(k):
            for i in range(k, len(xs), 4):
                got[i] = r(xs[i])

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # one thread per call: as many streams as cores, so the concurrent calls above ran side by side
        compiled = r._engines["m"].compiled
        cores = ovb.usable_cores()
        assert (compiled.get_property("NUM_STREAMS"), compiled.get_property("INFERENCE_NUM_THREADS")) == (cores, cores)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_streams_follow_the_threads_per_call(monkeypatch):
    monkeypatch.setattr(ovb, "usable_cores", lambda: 8)
    assert [ovb.streams_for(t) for t in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


def test_a_tampered_ir_file_is_refused_naming_it(bundles, tmp_path):
    import shutil

    for name, profile in (("weights.bin", "s"), ("m.xml", "m")):  # the shared weights: its first user named
        b = tmp_path / name
        shutil.copytree(bundles[1], b)
        data = bytearray((b / "profiles" / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (b / "profiles" / name).write_bytes(bytes(data))
        with pytest.raises(BundleError,
                           match=rf"profile '{profile}': artifact .*profiles/{name} has changed: expected sha256"):
            rt.load(b)


def test_openvino_not_installed_at_build(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ovb.OpenVINOBackend, "is_available", classmethod(lambda cls: False))
    with pytest.raises(BackendUnavailable, match=r"backend 'openvino' is not available here: .*pip install 'mrdeploy\[openvino\]'"):
        build_bundle(exported("cnn"), tmp_path / "b", ["48"], backend="openvino")
    assert not (tmp_path / "b").exists()
    with pytest.raises(SystemExit):
        main(["build-engine", str(exported("cnn")), "-o", str(tmp_path / "b"), "--profile", "48", "--backend", "openvino"])
    err = capsys.readouterr().err
    assert err.startswith("mrdeploy: error: backend 'openvino' is not available here") and "Traceback" not in err


def test_bundle_refused_without_openvino_or_with_another_major(bundles, monkeypatch):
    path = bundles[1]
    built = Manifest.read(path).build["openvino"]
    monkeypatch.setattr(ovb, "installed_version", lambda: None)
    with pytest.raises(BackendUnavailable, match=rf"built with OpenVINO {built}, but OpenVINO is not installed here: "
                                                 r"pip install 'mrdeploy\[openvino\]'"):
        rt.load(path)
    monkeypatch.setattr(ovb, "installed_version", lambda: "2024.6.0")
    with pytest.raises(BundleError, match=rf"IR written by OpenVINO {built}, got OpenVINO 2024.6.0 \(another major version\)"):
        rt.load(path)


def test_bf16_refused_on_a_cpu_without_it(exported, tmp_path, monkeypatch):
    monkeypatch.setattr(ovb, "cpu_has_bf16", lambda: False)
    with pytest.raises(BackendUnavailable, match="precision bf16: expected a CPU with bf16 instructions"):
        build_bundle(exported("cnn"), tmp_path / "b", ["48"], backend="openvino", precision="bf16")
    with pytest.raises(ExportError, match="precision: backend 'openvino' builds fp32, bf16, int8, auto, got 'fp16'"):
        build_bundle(exported("cnn"), tmp_path / "b", ["48"], backend="openvino", precision="fp16")


def test_runtime_import_stays_free_of_openvino(bundles):
    code = (
        "import sys; import mrdeploy.runtime as rt; from mrdeploy.runtime.backends import get_backend; "
        f"r = rt.load({str(bundles[1])!r}); get_backend('openvino'); "
        "print(json.dumps([m for m in sys.modules if m.split('.')[0] in ('openvino', 'onnx', 'torch')]))"
    )
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    assert Path(bundles[1], "profiles/weights.bin").is_file()
