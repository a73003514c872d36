"""build-engine with the onnxruntime backend: profiles checked, models specialized and checked, bundles."""

from __future__ import annotations

import collections
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mrdeploy.cli import main
from mrdeploy.errors import CalibrationError, ExportError, ProfileError
from mrdeploy.exporter.build import build_bundle, build_engine
from mrdeploy.exporter.onnx_model import read_model
from mrdeploy.exporter.specialize import cpu_session
from mrdeploy.runtime import load
from mrdeploy.runtime.manifest import Manifest, sha256_file, verify_artifacts


def _conv_model(path, h="height", w="width", batch="batch", metadata=None, out_spatial=True):
    """A small conv net (any exporter would do): input NCHW, a 3x3 conv, relu, output same H/W."""
    rng = np.random.default_rng(0)
    wt = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.2, "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["mask"]),
        helper.make_node("ReduceMean", ["mask"], ["score"], axes=[2, 3], keepdims=0),
    ]
    outs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 4])]
    if out_spatial:
        outs.insert(0, helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, 4, h, w]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, h, w])], outs, [wt, b]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    return _conv_model(tmp_path_factory.mktemp("m") / "conv.onnx", h="H_in", w="W_in", batch="N")


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if name in p.name]


# ------------------------------------------------------------------------------ model info from any ONNX


def test_model_info_is_inferred_without_metadata(conv):
    src = read_model(conv, divisor=8, mean="0.5", std="0.25,0.25,0.25", max_size="256x320")
    inp = src.info.inputs[0]
    assert (inp.name, inp.channels, inp.divisor, inp.max_size) == ("x", 3, 8, (256, 320))
    assert inp.mean == (0.5, 0.5, 0.5) and inp.std == (0.25, 0.25, 0.25)
    # dims named H_in/W_in (not height/width): the output carrying the same symbols is spatial
    assert [(o.name, o.spatial) for o in src.info.outputs] == [("mask", True), ("score", False)]
    assert src.info.task == "segmentation"
    assert src.dims["x"] == ["N", 3, "H_in", "W_in"]


def test_spatial_outputs_flag_and_unknown_output(tmp_path):
    path = _conv_model(tmp_path / "m.onnx", h=None, w=None)  # no symbols at all: nothing inferred
    assert [o.spatial for o in read_model(path).info.outputs] == [False, False]
    info = read_model(path, spatial_outputs=["mask:2"]).info
    assert (info.outputs[0].spatial, info.outputs[0].stride) == (True, 2)
    with pytest.raises(ExportError, match=r"--spatial-outputs 'nope': the model has no such output \(outputs: \['mask', 'score'\]\)"):
        read_model(path, spatial_outputs=["nope"])


def test_metadata_is_read_when_present(tmp_path):
    from mrdeploy.runtime.modelinfo import InputInfo, ModelInfo, OutputInfo

    info = ModelInfo("demo", "segmentation", [InputInfo("x", divisor=4, min_size=(8, 8))], [OutputInfo("mask", True), OutputInfo("score")])
    path = _conv_model(tmp_path / "m.onnx", metadata=info.to_metadata_props())
    src = read_model(path)
    assert src.from_metadata and src.info.name == "demo" and src.info.inputs[0].divisor == 4
    assert read_model(path, divisor=16).info.inputs[0].divisor == 16  # flags override metadata


def test_models_mrdeploy_cannot_feed_are_rejected(tmp_path):
    def one_input(name, elem, dims):
        g = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "g",
            [helper.make_tensor_value_info("x", elem, dims)], [helper.make_tensor_value_info("y", elem, dims)],
        )
        path = tmp_path / name
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    with pytest.raises(ExportError, match=r"input 'x': expected an NCHW float image input \(rank 4, float\), got rank 2 with ONNX elem_type 7"):
        read_model(one_input("ids.onnx", TensorProto.INT64, ["n", 16]))
    with pytest.raises(ExportError, match=r"input 'x': expected a fixed channel count in dim 1 \(NCHW\), got 'c'"):
        read_model(one_input("c.onnx", TensorProto.FLOAT, ["n", "c", "h", "w"]))
    path = one_input("ok.onnx", TensorProto.FLOAT, ["n", 3, "h", "w"])
    with pytest.raises(ExportError, match=r"--mean: expected 3 values \(one per channel\) or 1, got 2"):
        read_model(path, mean="0.5,0.5")
    with pytest.raises(ExportError, match=r"--std: expected positive values, got \[0.0, 1.0, 1.0\]"):
        read_model(path, std=[0, 1, 1])
    with pytest.raises(ExportError, match=r"no such file"):
        read_model(tmp_path / "missing.onnx")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_corrupt_or_truncated_model_is_rejected(conv, tmp_path, cut):
    data = conv.read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ExportError, match=rf"ONNX model {bad} \({len(data[: int(len(data) * cut)])} bytes\) cannot be read"):
        read_model(bad)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(ExportError, match="cannot be read"):
        read_model(garbage)


# ------------------------------------------------------------------------------ profile errors via the CLI

CLI_ERRORS = [
    (["--profile", "96-"], "mrdeploy: error: profile '96-' does not parse: expected SIZE, HxW, MIN-MAX[@OPT] or HxW-HxW[@HxW]"),
    (["--profile", "64-128@160"], "mrdeploy: error: profile 'p0_160x160', input 'x': expected min <= opt <= max on every axis, got min [1, 3, 64, 64], opt [1, 3, 160, 160], max [1, 3, 128, 128]"),
    (["--profile", "100", "--divisor", "8"], "mrdeploy: error: profile 'p0_100x100', input 'x': min size 100x100 is not a multiple of the model's divisor 8 (nearest: 96x96)"),
    (["--profile", "s=64-512", "--max-size", "256"], "mrdeploy: error: profile 's', input 'x': max size 512x512 is above the model's valid maximum 256x256"),
    (["--profile", "16", "--min-size", "32"], "mrdeploy: error: profile 'p0_16x16', input 'x': min size 16x16 is below the model's valid minimum 32x32"),
    (["--profile", "a=64", "--profile", "a=128"], "mrdeploy: error: profile name 'a' is used twice (profiles 1 and 2): expected unique names"),
    (["--profile", "64", "--batch", "4-2"], "mrdeploy: error: batch '4-2': expected 1 <= min <= opt <= max, got 4, 4, 2"),
    (["--profile", "x:64,y:64"], "mrdeploy: error: profile 'x:64,y:64': expected sizes for inputs ['x'], got ['x', 'y'] (unknown: ['y'])"),
    ([], "mrdeploy: error: no profiles given: expected at least one --profile"),
    (["--profile", "64", "--precision", "int8"], "mrdeploy: error: precision 'int8' needs INT8 calibration data: give --calib-data"),
]


@pytest.mark.parametrize("args,message", CLI_ERRORS, ids=[m.split(": ", 2)[2][:30] for _, m in CLI_ERRORS])
def test_build_engine_profile_errors(conv, tmp_path, capsys, args, message):
    out = tmp_path / "bundle"
    with pytest.raises(SystemExit) as e:
        main(["build-engine", str(conv), "-o", str(out), *args])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert not out.exists() and _leftovers(tmp_path, "bundle") == []


def test_build_engine_cli_prints_the_table(conv, tmp_path, capsys):
    main(["build-engine", str(conv), "-o", str(tmp_path / "b"), "--profile", "s=32-64@48", "--profile", "64x96", "--batch", "1-2", "-q"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["profile", "sizes", "(min-max@opt)", "backend", "prec", "nodes", "check", "err", "cosine", "time"]
    assert lines[1].split()[:6] == ["s", "32-64@48", "batch", "1-2@1", "onnxruntime", "fp32"]
    assert lines[2].split()[:4] == ["p1_64x96", "64x96", "batch", "1-2@1"]
    assert lines[-1] == f"wrote {tmp_path / 'b'} (2 profiles, policy pad)"


def test_fixed_size_model_rejects_a_ranged_profile(tmp_path):
    fixed = _conv_model(tmp_path / "fixed.onnx", h=64, w=96, batch=1)
    with pytest.raises(ProfileError) as e:
        build_engine(fixed, tmp_path / "b", ["32-128@64"])
    assert str(e.value) == (
        "profile 'p0_64x64', input 'x': the model fixes the input shape to 1x3x64x96 (height 64), "
        "the profile asks for height 32-128"
    )
    # its own size is fine, and the batch is taken from the model
    path = build_engine(fixed, tmp_path / "b", ["64x96"])
    assert Manifest.read(path).profiles[0].profile.inputs["x"].min == (1, 3, 64, 96)


def test_int8_goes_through_the_calibration_hook(conv, tmp_path, monkeypatch):
    with pytest.raises(CalibrationError, match="precision 'auto' needs INT8 calibration"):
        build_engine(conv, tmp_path / "b", ["64"], precision="auto")
    assert not (tmp_path / "b").exists()
    # the hook's contract: it gets the fp32 specialized model and returns what goes into the bundle
    import mrdeploy.exporter.build as build

    seen = []

    def fake_hook(source, model, profile, **kw):
        seen.append((profile.name, kw["precision"], kw["options"].data, len(model.graph.node)))
        return model, "int8", {"method": kw["options"].method, "samples": 3}, {"chosen": "int8"}, b"CACHE"

    monkeypatch.setattr(build, "_quantize_profile", fake_hook)
    path = build_engine(conv, tmp_path / "b", ["s=64"], precision="int8", calib_data="imgs", calib_method="minmax")
    e = Manifest.read(path).profiles[0]
    assert seen == [("s", "int8", "imgs", 3)]
    assert e.precision == "int8" and e.calibration["method"] == "minmax" and e.calibration["cache"] == "profiles/s.calib"
    assert e.calibration["cache_sha256"] == sha256_file(path / "profiles/s.calib")
    verify_artifacts(path, Manifest.read(path))


# ------------------------------------------------------------------------------ bundles


def test_identical_artifacts_are_stored_once(conv, tmp_path):
    # two ranged profiles whose specialized graphs come out byte-identical share one file
    res = build_bundle(conv, tmp_path / "b", ["a=32-64@48", "b=64-96@80", "128"], divisor=8, quiet=True)
    m = Manifest.read(res.path)
    verify_artifacts(res.path, m)
    arts = {e.name: e.artifact for e in m.profiles}
    assert arts["b"] == arts["a"] == "profiles/a.onnx" and arts["p2_128x128"] == "profiles/p2_128x128.onnx"
    assert sorted(p.name for p in (res.path / "profiles").iterdir()) == ["a.onnx", "p2_128x128.onnx"]
    assert "b: its artifact is identical to profiles/a.onnx: stored once" in res.notes
    with load(res.path) as runner:
        x = np.random.default_rng(0).standard_normal((1, 3, 80, 80)).astype(np.float32)
        assert runner.select(1, 80, 80).profile.name == "b" and runner(x)["mask"].shape == (1, 4, 80, 80)


def test_bundle_manifest_hashes_and_options(conv, tmp_path):
    res = build_bundle(conv, tmp_path / "b", ["s=32-96@64", "128"], batch="1-2@1", divisor=8, threads=2, quiet=True)
    m = Manifest.read(res.path)
    verify_artifacts(res.path, m)
    assert m.source == {"artifact": "model.onnx", "sha256": sha256_file(conv)}
    assert [e.name for e in m.profiles] == ["s", "p1_128x128"]
    for e in m.profiles:
        assert e.sha256 == sha256_file(res.path / e.artifact) and e.artifact == f"profiles/{e.name}.onnx"
        assert e.options["session"] == {"intra_op_num_threads": 2, "graph_optimization_level": "all"}
        assert e.options["check"]["max_abs"] <= 1e-4 and e.options["check"]["min_cosine"] > 0.9999
    s = m.profiles[0].profile.inputs["x"]
    assert (s.min, s.opt, s.max) == ((1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 96, 96))
    assert m.model.inputs[0].divisor == 8 and m.policy == "pad"
    assert m.build["onnx"] == onnx.__version__ and m.build["tensorrt"] is None
    # the specialized models: batch stays a range, a static profile fixes H/W
    dims = [[d.dim_value or d.dim_param for d in onnx.load(str(res.path / e.artifact)).graph.input[0].type.tensor_type.shape.dim] for e in m.profiles]
    assert dims[0][1] == 3 and isinstance(dims[0][2], str) and dims[1][2:] == [128, 128]
    # a rebuild replaces the bundle whole
    build_engine(conv, res.path, ["64"], quiet=True)
    assert [e.name for e in Manifest.read(res.path).profiles] == ["p0_64x64"]
    assert sorted(p.name for p in (res.path / "profiles").iterdir()) == ["p0_64x64.onnx"]


def test_a_model_with_external_data_becomes_a_self_contained_bundle(conv, tmp_path):
    src = tmp_path / "ext" / "m.onnx"
    src.parent.mkdir()
    onnx.save(onnx.load(str(conv)), str(src), save_as_external_data=True, location="m.weights", size_threshold=0)
    assert (src.parent / "m.weights").is_file() and read_model(src).external_data
    out = build_engine(src, tmp_path / "b", ["64"], quiet=True)
    moved = tmp_path / "elsewhere"
    shutil.move(str(out), moved)
    shutil.rmtree(src.parent)
    m = Manifest.read(moved)
    verify_artifacts(moved, m)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    a = cpu_session(moved / "model.onnx").run(None, {"x": x})
    b = cpu_session(moved / m.profiles[0].artifact).run(None, {"x": x})
    assert np.abs(a[0] - b[0]).max() < 1e-5


def test_a_failure_mid_build_leaves_no_bundle_and_keeps_the_old_one(conv, tmp_path, monkeypatch):
    import mrdeploy.exporter.specialize as sp

    out = build_engine(conv, tmp_path / "b", ["64"], quiet=True)
    before = (out / "manifest.json").read_text()
    real = sp.specialize

    def broken(model, profile):
        s = real(model, profile)
        if profile.name == "second":  # a wrong specialization: the output scaled by 1.01
            g = s.model.graph
            g.initializer.append(numpy_helper.from_array(np.array(1.01, np.float32), "k"))
            old = g.output[1].name
            for n in g.node:
                n.output[:] = [o + "_raw" if o == old else o for o in n.output]
            g.node.append(helper.make_node("Mul", [old + "_raw", "k"], [old]))
        return s

    monkeypatch.setattr(sp, "specialize", broken)
    with pytest.raises(ExportError) as e:
        build_engine(conv, out, ["first=64", "second=32-96@64"], quiet=True)
    msg = str(e.value)
    assert msg.startswith("profile 'second': the fp32 specialized model does not match the source ONNX model; no bundle written")
    assert "score" in msg and "NO" in msg and "yes" in msg  # the table: the mask rows pass, the score rows fail
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def _two_input_model(path):
    """template + search inputs (dims named per input), a spatial response on the search grid."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), n) for n in ("wt", "ws")]
    nodes = [
        helper.make_node("Conv", ["template", "wt"], ["ft"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["ft"], ["kt"]),
        helper.make_node("Conv", ["search", "ws"], ["fs"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["fs", "kt"], ["response"]),
    ]
    ins = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", 3, f"{n}_h", f"{n}_w"]) for n in ("template", "search")
    ]
    out = [helper.make_tensor_value_info("response", TensorProto.FLOAT, ["b", 4, "search_h", "search_w"])]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", ins, out, inits), opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_two_input_model(tmp_path):
    path = _two_input_model(tmp_path / "two.onnx")
    info = read_model(path).info
    assert [o.spatial for o in info.outputs] == [True]
    res = build_bundle(path, tmp_path / "b", ["near=template:32-64@48,search:64-128@96", "template:64,search:128"], quiet=True)
    m = Manifest.read(res.path)
    near = m.profiles[0].profile.inputs
    assert (near["template"].opt, near["search"].max) == ((1, 3, 48, 48), (1, 3, 128, 128))
    assert [r.describe for r in res.profiles] == ["template:32-64@48,search:64-128@96", "template:64,search:128"]
    assert len({r.point for r in res.check_rows if r.profile == "near"}) == 3
    with pytest.raises(ProfileError, match=r"profile '64' gives one size but the model has 2 image inputs \(template, search\)"):
        build_engine(path, tmp_path / "c", ["64"])


def test_gpu_provider_options_come_from_the_profile(monkeypatch):
    import onnxruntime as ort

    from mrdeploy.exporter.specialize import session_settings
    from mrdeploy.runtime.profiles import make_profile, parse_profile

    profile = make_profile(parse_profile("s=template:112-128@128,search:224-384@256"), {"template": 3, "search": 3}, batch=(1, 1, 2))
    assert "provider_options" not in session_settings(profile, 2)  # CPU only here
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    trt = session_settings(profile, 2)["provider_options"]["TensorrtExecutionProvider"]
    assert trt == {
        "trt_profile_min_shapes": "template:1x3x112x112,search:1x3x224x224",
        "trt_profile_opt_shapes": "template:1x3x128x128,search:1x3x256x256",
        "trt_profile_max_shapes": "template:2x3x128x128,search:2x3x384x384",
    }


# ------------------------------------------------------------------------------ the examples


def _outputs_match(source, artifact, profile):
    ref, got = cpu_session(source), cpu_session(artifact)
    names = [o.name for o in ref.get_outputs()]
    rng = np.random.default_rng(1)
    worst = 0.0
    for which in ("min", "opt", "max"):
        shape = getattr(profile.inputs["input"], which)
        x = rng.standard_normal(shape).astype(np.float32)
        for a, b in zip(ref.run(names, {"input": x}), got.run(names, {"input": x})):
            assert a.shape == b.shape
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


@pytest.mark.parametrize("name", ["vit", "seg"])
def test_examples_specialize_and_match_the_source(exported, tmp_path, name):
    source = exported(name)
    res = build_bundle(source, tmp_path / name, ["small=32-96@64", "128", "large=128-256@192"], quiet=True)
    m = Manifest.read(res.path)
    verify_artifacts(res.path, m)
    assert len(m.profiles) == 3
    for e, r in zip(m.profiles, res.profiles):
        assert _outputs_match(source, res.path / e.artifact, e.profile) < 1e-4
        assert r.nodes_after < r.nodes_before
    static = onnx.load(str(res.path / m.profiles[1].artifact))
    ops = collections.Counter(n.op_type for n in static.graph.node)
    src_ops = collections.Counter(n.op_type for n in onnx.load(str(source)).graph.node)
    assert src_ops["Shape"] > 0 and ops["Shape"] == 0 and ops["ConstantOfShape"] == 0
    if name == "vit":  # the resampled position embedding is folded to a constant
        assert src_ops["Resize"] == 1 and ops["Resize"] == 0
    else:  # BatchNorm folded into the convs; the decoder's upsampling stays
        assert ops["BatchNormalization"] == 0 and ops["Resize"] == src_ops["Resize"]
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["model"]["name"] == name and manifest["format_version"] == 1


@pytest.mark.parametrize("name,profile", [("seg", "128"), ("vit", "32-96@64")])
def test_fp16_onnxruntime_profile(exported, tmp_path, name, profile):
    res = build_bundle(exported(name), tmp_path / "b", [profile], precision="fp16", quiet=True)
    e = Manifest.read(res.path).profiles[0]
    m = onnx.load(str(res.path / e.artifact))
    assert e.precision == "fp16" and m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(t.data_type == TensorProto.FLOAT16 for t in m.graph.initializer)
    # checked at min/opt/max against the fp32 source within fp16 tolerances (and not bit-equal)
    assert 0 < res.profiles[0].max_abs < 5e-2 and res.profiles[0].min_cosine > 0.999
    if name == "vit":  # ranged: the position-embedding grid size is still computed, in float32/int64
        assert any(n.op_type == "Resize" for n in m.graph.node)
    shutil.rmtree(res.path)
