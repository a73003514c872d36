"""The backend registry: a backend defined and registered in this file only (a numpy interpreter of the
specialized ONNX graph, stored as JSON + .npz) builds, loads and serves a bundle through the public API
and the CLI, with no edit anywhere else."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mrdeploy.runtime as rt
from mrdeploy.cli import main
from mrdeploy.errors import BundleError, CalibrationError, ExportError
from mrdeploy.exporter.build import build_bundle
from mrdeploy.exporter.specialize import cpu_session
from mrdeploy.runtime.backends import (
    Backend,
    BuiltProfile,
    Engine,
    ProfileBuild,
    backend_names,
    register_backend,
    unregister_backend,
)
from mrdeploy.runtime.manifest import Manifest, verify_artifacts

# ------------------------------------------------------------------------------ the toy backend


def _conv2d(x, w, b, pads):
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh, ow = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    cols = np.stack([x[:, :, i:i + oh, j:j + ow] for i in range(kh) for j in range(kw)], axis=2)  # n,c,kk,oh,ow
    out = np.einsum("nckhw,ock->nohw", cols, w.reshape(k, c, kh * kw), optimize=True)
    return out + b.reshape(1, k, 1, 1)


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


OPS = {
    "Conv": lambda ins, a: _conv2d(ins[0], ins[1], ins[2], a.get("pads", [0, 0, 0, 0])),
    "Relu": lambda ins, a: np.maximum(ins[0], 0),
    "ReduceMean": lambda ins, a: ins[0].mean(
        axis=tuple(a["axes"] if "axes" in a else ins[1].tolist()), keepdims=bool(a.get("keepdims", 1))
    ),
}


class NumpyEngine(Engine):
    """Runs the stored graph with numpy alone."""

    backend = "toy-numpy"

    def __init__(self, path, entry, build=None, **options):
        super().__init__(path, entry, build)
        self.options_seen = options
        self.graph = json.loads(path.read_text())
        with np.load(path.with_suffix(".npz")) as z:
            self.weights = {k: z[k] for k in z.files}
        self.input_names = self.graph["inputs"]
        self.output_names = self.graph["outputs"]
        self.input_dtypes = {n: np.dtype(np.float32) for n in self.input_names}

    def run(self, feeds):
        env = {**self.weights, **{k: np.asarray(v, np.float32) for k, v in feeds.items()}}
        for node in self.graph["nodes"]:
            env[node["output"]] = OPS[node["op"]]([env[i] for i in node["inputs"]], node["attrs"]).astype(np.float32)
        return {n: env[n] for n in self.output_names}


class NumpyBackend(Backend):
    """Build: the specialized ONNX -> a JSON graph (artifact) + the weights as .npz (a further file)."""

    name = "toy-numpy"
    engine = NumpyEngine
    precisions = ("fp32",)
    load_options = ("threads",)

    def build_profile(self, stage: ProfileBuild) -> BuiltProfile:
        model = stage.model
        graph = {"inputs": [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}],
                 "outputs": [o.name for o in model.graph.output], "nodes": []}
        for node in model.graph.node:
            if node.op_type not in OPS:
                raise ExportError(f"toy-numpy: op {node.op_type} is not supported")
            graph["nodes"].append({"op": node.op_type, "inputs": list(node.input), "output": node.output[0],
                                   "attrs": {k: list(v) if isinstance(v, (list, tuple)) else v
                                             for k, v in _attrs(node).items()}})
        base = f"profiles/{stage.profile.name}"
        (stage.directory / f"{base}.json").write_text(json.dumps(graph))
        np.savez(stage.directory / f"{base}.npz",
                 **{t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
        # the artifact is checked against the source like every backend's: through the engine itself
        engine = NumpyEngine(stage.directory / f"{base}.json", None)
        rows = stage.check(_Session(engine), 1e-4, 1e-3, 0.9999, what="toy-numpy")
        return BuiltProfile(f"{base}.json", {"kind": "numpy"}, files=[f"{base}.npz"],
                            max_abs=max(r.max_abs for r in rows), min_cosine=min(r.cosine for r in rows))


class _Session:
    def __init__(self, engine):
        self.engine = engine

    def run(self, names, feeds):
        out = self.engine.run(feeds)
        return [out[n] for n in names]


@pytest.fixture
def toy():
    register_backend(NumpyBackend)
    yield NumpyBackend
    unregister_backend(NumpyBackend.name)


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["mask"]),
        helper.make_node("ReduceMean", ["mask"], ["score"], axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 4, "H", "W"]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.2, "w"),
         numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")],
    )
    path = tmp_path_factory.mktemp("m") / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# ------------------------------------------------------------------------------ tests


def test_a_backend_registered_in_a_test_builds_loads_and_serves(toy, conv, tmp_path):
    assert "toy-numpy" in backend_names()
    res = build_bundle(conv, tmp_path / "b", ["small=32-64@48", "big=96x128"], backend="toy-numpy", divisor=8,
                       threads=1, quiet=True)
    m = Manifest.read(res.path)
    verify_artifacts(res.path, m)
    assert [(e.backend, e.artifact, [f["path"] for f in e.files]) for e in m.profiles] == [
        ("toy-numpy", "profiles/small.json", ["profiles/small.npz"]),
        ("toy-numpy", "profiles/big.json", ["profiles/big.npz"]),
    ]
    assert all(r.max_abs is not None and r.max_abs < 1e-4 for r in res.profiles)
    src = cpu_session(conv)
    rng = np.random.default_rng(1)
    with rt.load(res.path, threads=2) as runner:
        for h, w, served in ((48, 40, "small"), (96, 128, "big"), (56, 64, "small"), (80, 80, "big")):
            x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
            out, info = runner.run_with_info(x)
            ref_mask, ref_score = src.run(["mask", "score"], {"x": x})
            assert info.decision.profile_name == served
            assert out["mask"].shape == ref_mask.shape == (1, 4, h, w)  # padding undone on the spatial output
            if info.decision.action == "exact":
                np.testing.assert_allclose(out["mask"], ref_mask, rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(out["score"], ref_score, rtol=1e-4, atol=1e-5)
        engine = runner._engines["small"]
        assert isinstance(engine, NumpyEngine) and engine.options_seen == {"threads": 2}  # no ORT providers


def test_cli_reads_the_registry(toy, conv, tmp_path, capsys):
    main(["build-engine", str(conv), "-o", str(tmp_path / "b"), "--profile", "s=64", "--backend", "toy-numpy",
          "--divisor", "8", "-q"])
    assert "toy-numpy" in capsys.readouterr().out
    np.save(tmp_path / "x.npy", np.ones((1, 3, 64, 64), np.float32))
    main(["run", str(tmp_path / "b"), str(tmp_path / "x.npy"), "--backend", "toy-numpy", "--json"])
    assert json.loads(capsys.readouterr().out.splitlines()[0])["profile"] == "s"


def test_unregistered_backend_is_refused_everywhere(conv, tmp_path, capsys):
    with pytest.raises(ExportError, match=r"backend: unknown backend 'toy-numpy', expected one of onnxruntime, tensorrt, openvino"):
        build_bundle(conv, tmp_path / "b", ["64"], backend="toy-numpy")
    with pytest.raises(SystemExit):
        main(["build-engine", str(conv), "-o", str(tmp_path / "b"), "--profile", "64", "--backend", "toy-numpy"])
    assert "'toy-numpy' is not one of 'onnxruntime', 'tensorrt', 'openvino'" in capsys.readouterr().err
    # a bundle built while the backend was registered is refused once it is not
    register_backend(NumpyBackend)
    try:
        path = build_bundle(conv, tmp_path / "b", ["s=64"], backend="toy-numpy", quiet=True).path
    finally:
        unregister_backend("toy-numpy")
    with pytest.raises(BundleError, match="profile 's': unknown backend 'toy-numpy', expected one of onnxruntime"):
        rt.load(path)


def test_backend_precisions_and_calibration_targets_come_from_the_registry(toy, conv, tmp_path):
    from mrdeploy.calibration.qdq import target_backend, targets

    with pytest.raises(ExportError, match="precision: backend 'toy-numpy' builds fp32, got 'fp16'"):
        build_bundle(conv, tmp_path / "b", ["64"], backend="toy-numpy", precision="fp16")
    assert targets() == ["onnxruntime", "tensorrt", "openvino"]  # toy-numpy takes no Q/DQ model
    with pytest.raises(CalibrationError, match="calibration target 'toy-numpy': expected one of onnxruntime, tensorrt, openvino"):
        target_backend("toy-numpy")


def test_further_files_go_through_the_one_path_rule(toy, conv, tmp_path):
    path = build_bundle(conv, tmp_path / "b", ["s=64"], backend="toy-numpy", quiet=True).path
    raw = json.loads((path / "manifest.json").read_text())

    def with_files(files):
        raw["profiles"][0]["files"] = files
        (path / "manifest.json").write_text(json.dumps(raw))

    good = raw["profiles"][0]["files"]
    with_files([{"path": "../s.npz", "sha256": good[0]["sha256"]}])
    with pytest.raises(BundleError, match=r"profile 's': file: expected a path inside the bundle, got '../s.npz'"):
        rt.load(path)
    with_files([{"path": "profiles/s.npz", "sha256": "abc"}])
    with pytest.raises(BundleError, match=r"profile 's': file 'profiles/s.npz' sha256: expected a sha256"):
        rt.load(path)
    with_files(good)
    (path / "profiles/s.npz").unlink()
    with pytest.raises(BundleError, match=r"profile 's': artifact .*profiles/s.npz is missing"):
        rt.load(path)
    with pytest.raises(BundleError, match=r"profile 's': artifact .*profiles/s.npz is missing"):
        rt.load(path, verify=False)(np.ones((1, 3, 64, 64), np.float32))
