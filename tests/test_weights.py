"""Weights stored once (exporter/weights.py): a bundle's ONNX graphs (the source and each profile) read
their shared tensors from one file, the outputs do not change, the file is verified, and a Triton
repository carries it."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest

import mrdeploy.runtime as rt
from mrdeploy.errors import BundleError
from mrdeploy.exporter.build import build_bundle
from mrdeploy.exporter.weights import ALIGN, MIN_BYTES, WEIGHTS, share_weights
from mrdeploy.runtime.manifest import Manifest, sha256_file, verify_artifacts

PROFILES = ["small=32-48@48", "s64=64", "large=80-96@96"]


@pytest.fixture(scope="module")
def pair(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("weights")
    model = exported("cnn")
    shared = build_bundle(model, out / "shared", PROFILES, threads=1, quiet=True)
    own = build_bundle(model, out / "own", PROFILES, threads=1, quiet=True, share_weights=False)
    return shared, own


def _disk(path) -> int:
    return sum(q.stat().st_size for q in path.rglob("*") if q.is_file())


def test_each_tensor_is_stored_once_and_the_outputs_do_not_change(pair):
    shared, own = pair
    path = shared.path
    m = Manifest.read(path)
    verify_artifacts(path, m)
    weights = {"path": WEIGHTS, "sha256": sha256_file(path / WEIGHTS)}
    assert m.source["files"] == [weights] and all(e.files == [weights] for e in m.profiles)
    assert any(n.startswith("weights: ") and "MB saved" in n for n in shared.notes)
    size = (path / WEIGHTS).stat().st_size
    graphs = sorted({m.source["artifact"], *(e.artifact for e in m.profiles)})
    assert graphs == ["model.onnx", "profiles/s64.onnx", "profiles/small.onnx"]  # large = small, stored once
    for g in graphs:  # every large tensor is external, in the shared file, within its bounds
        proto = onnx.load(str(path / g), load_external_data=False)
        big = [t for t in proto.graph.initializer
               if t.data_location == onnx.TensorProto.EXTERNAL or len(t.raw_data) >= MIN_BYTES]
        assert big and all(t.data_location == onnx.TensorProto.EXTERNAL for t in big)
        for t in big:
            info = {kv.key: kv.value for kv in t.external_data}
            assert info["location"] == (WEIGHTS if g == "model.onnx" else "weights.bin")
            assert int(info["offset"]) % ALIGN == 0 and int(info["offset"]) + int(info["length"]) <= size
    # without sharing each of the three graphs holds its own copy
    assert _disk(own.path) - _disk(path) >= 0.95 * (len(graphs) - 1) * size
    assert not (own.path / WEIGHTS).exists() and all(not e.files for e in Manifest.read(own.path).profiles)
    rng = np.random.default_rng(0)
    with rt.load(path, threads=1) as a, rt.load(own.path, threads=1) as b:
        for h, w in ((32, 32), (32, 48), (64, 64), (80, 96), (56, 60)):
            x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
            np.testing.assert_array_equal(a(x), b(x))


def test_a_changed_weights_file_is_refused_naming_it(pair, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(pair[0].path, b)
    data = bytearray((b / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"profile 'small': artifact .*{WEIGHTS} has changed: expected sha256"):
        rt.load(b)
    with pytest.raises(BundleError, match=rf"source model: artifact .*{WEIGHTS} has changed"):
        verify_artifacts(b, Manifest.read(b))


def test_the_triton_repository_carries_the_shared_weights(pair, tmp_path):
    pytest.importorskip("tritonclient")
    from mrdeploy._ort import cpu_session
    from mrdeploy.triton.repository import write_repository

    repo = write_repository(pair[0].path, tmp_path / "repo")
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with rt.load(pair[0].path, threads=1) as r:
        want = r(x)
    models = [p for p in (tmp_path / "repo").iterdir() if (p / "1" / "model.onnx").is_file()]
    assert len(models) == len(repo.profile_models) == 3
    for p in models:
        assert sha256_file(p / "1" / "weights.bin") == sha256_file(pair[0].path / WEIGHTS)
    s64 = next(p for p in models if p.name.endswith("s64"))
    got = cpu_session(s64 / "1" / "model.onnx", 1).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_one_graph_alone_is_left_as_it_is(exported, tmp_path):
    shutil.copyfile(exported("cnn"), tmp_path / "model.onnx")
    source = {"artifact": "model.onnx", "sha256": sha256_file(tmp_path / "model.onnx")}
    notes: list[str] = []
    assert share_weights(tmp_path, source, [], notes) == (source, []) and notes == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_profiles_of_one_stored_artifact_share_one_engine(pair):
    from dataclasses import replace

    from mrdeploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    m = Manifest.read(pair[0].path)
    small, s64, large = m.profiles
    assert small.artifact == large.artifact != s64.artifact
    with rt.load(pair[0].path, threads=1) as r:
        r(np.ones((1, 3, 32, 32), np.float32))  # served by small: large's engine is the same one
        assert r.loaded == ["small", "large"]
        r(np.ones((1, 3, 96, 96), np.float32))
        r(np.ones((1, 3, 64, 64), np.float32))
        assert r.loaded == ["small", "large", "s64"] and r.load_counts == {"small": 1, "s64": 1}
    key = OnnxRuntimeBackend.engine_key
    assert key(small, {}) == key(large, {}) != key(s64, {})
    session = {**large.options.get("session", {}), "intra_op_num_threads": 3}
    other = replace(large, options={**large.options, "session": session})  # another session
    assert key(other, {}) != key(small, {})
    assert key(small, {"providers": ["tensorrt", "cuda"]}) is None  # built for the profile's own shapes


def test_a_graph_that_shares_nothing_is_left_byte_for_byte(exported, tmp_path):
    from tests.bundles import make_model

    (tmp_path / "profiles").mkdir()
    for rel in ("model.onnx", "profiles/a.onnx"):  # the same weights twice: shared
        shutil.copyfile(exported("cnn"), tmp_path / rel)
    b = onnx.load(str(make_model(tmp_path / "profiles" / "b.onnx", "cls", seed=3)))  # nothing to share
    big = max(b.graph.initializer, key=lambda t: len(t.raw_data))
    big.CopyFrom(onnx.helper.make_tensor(big.name, big.data_type, big.dims,  # typed field, not raw bytes
                                         onnx.numpy_helper.to_array(big).ravel().tolist()))
    onnx.save(b, str(tmp_path / "profiles" / "b.onnx"))
    before = sha256_file(tmp_path / "profiles" / "b.onnx")
    entries = [replace(e, artifact=f"profiles/{n}.onnx", sha256=sha256_file(tmp_path / f"profiles/{n}.onnx"))
               for n, e in (("a", _entry("a")), ("b", _entry("b")))]
    source = {"artifact": "model.onnx", "sha256": sha256_file(tmp_path / "model.onnx")}
    source, entries = share_weights(tmp_path, source, entries, [])
    assert source["files"][0]["path"] == WEIGHTS and entries[0].files[0]["path"] == WEIGHTS
    assert entries[1].files == [] and entries[1].sha256 == before == sha256_file(tmp_path / "profiles" / "b.onnx")


def test_an_openvino_profile_named_weights_keeps_its_constants(exported, tmp_path):
    pytest.importorskip("openvino")
    from mrdeploy._ort import cpu_session

    path = build_bundle(exported("cnn"), tmp_path / "b", ["weights=64", "s=32-48@48"], backend="openvino",
                        threads=1, quiet=True).path
    assert sorted(p.name for p in (path / "profiles").iterdir()) == ["s.xml", "weights.bin", "weights.xml"]
    src = cpu_session(path / "model.onnx", 1)
    with rt.load(path, threads=1) as r:
        for size in (64, 48):
            x = np.random.default_rng(size).standard_normal((1, 3, size, size)).astype(np.float32)
            np.testing.assert_allclose(r(x), src.run(None, {"input": x})[0], rtol=1e-4, atol=1e-4)


def _entry(name: str):
    from mrdeploy.runtime.manifest import ProfileEntry
    from mrdeploy.runtime.profiles import make_profile, parse_profile

    return ProfileEntry(profile=make_profile(parse_profile(f"{name}=64"), {"input": 3}), backend="onnxruntime",
                        precision="fp32", artifact="", sha256="")
