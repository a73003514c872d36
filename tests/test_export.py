"""mrdeploy.exporter.export: dynamic export, metadata, the sweep, the baked-shape trap, bad input."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest
import torch

from mrdeploy.errors import ExportError, MrdeployError
from mrdeploy.exporter import SweepError, export
from mrdeploy.exporter.shapes import parse_input_shapes, parse_shape, parse_sizes
from mrdeploy.exporter.sweep import compare, plan_sizes
from mrdeploy.runtime.modelinfo import ModelInfo

MODELS = '''
import torch
import torch.nn.functional as F
from torch import nn


class Good(nn.Module):
    """Conv, a resize taken from the tensor's shape, global mean: right at every size."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(y.mean(dim=(2, 3)))


class Baked(nn.Module):
    """Global mean pooling with the pixel count frozen as a Python int (the planted bug)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        count = int(y.shape[2]) * int(y.shape[3])
        return y.sum(dim=(2, 3)) / count


class Unexportable(nn.Module):
    def forward(self, x):
        m = x.flatten(1)[:, :4]
        return torch.linalg.eigvalsh(m.T @ m).unsqueeze(0)


class Pair(nn.Module):
    """Two image inputs of different sizes, pooled and mixed."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, small, large):
        return self.a(small).mean(dim=(2, 3)) * self.b(large).amax(dim=(2, 3))


def pair():
    torch.manual_seed(0)
    return Pair()


def good(num_classes: int = 5, seed: int = 0):
    torch.manual_seed(seed)
    return Good(num_classes).eval()


def baked(seed: int = 0):
    torch.manual_seed(seed)
    return Baked().eval()


def unexportable():
    return Unexportable()


def raises(**kwargs):
    raise ValueError("width must be positive")


def not_a_module():
    return 42
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A user's model file: ``str(path) + ":good"`` etc."""
    d = tmp_path_factory.mktemp("user_models")
    path = d / "user_models.py"
    path.write_text(textwrap.dedent(MODELS))
    return path


@pytest.fixture(scope="module")
def good_export(models, tmp_path_factory):
    """The good model exported once with the defaults (dynamo, optimize, validate, report)."""
    d = tmp_path_factory.mktemp("good")
    labels = d / "labels.txt"
    labels.write_text("a\nb\nc\nd\ne\n")
    result = export(
        f"{models}:good", (1, 3, 64, 64), d / "good.onnx", divisor=8, min_size=16, max_size=256,
        mean=(0.5,), std=(0.25, 0.25, 0.25), labels=labels, report=d / "report.json",
    )
    return result, d


def _leftovers(d, name):
    return [p.name for p in d.iterdir() if name in p.name]


# --- the good path -----------------------------------------------------------------------------------


def test_good_export_is_dynamic_optimized_and_self_contained(good_export):
    result, d = good_export
    assert result.exporter == "dynamo" and result.fallback_reason is None
    assert result.path.is_file() and not (d / "good.onnx.data").exists()
    assert sorted(p.name for p in d.iterdir()) == ["good.onnx", "labels.txt", "report.json"]
    model = onnx.load(str(result.path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "input" and dims == ["batch", 3, "height", "width"]
    assert model.graph.output[0].name == "logits"
    assert result.optimizer == "onnxscript+onnxslim" and 0 < result.nodes_after <= result.nodes_before
    assert result.nodes_after == len(model.graph.node)


def test_metadata_round_trips(good_export):
    result, _ = good_export
    model = onnx.load(str(result.path))
    info = ModelInfo.from_metadata_props({p.key: p.value for p in model.metadata_props})
    assert info == result.model_info
    assert info.name == "good" and info.task == "classification" and info.labels == list("abcde")
    (inp,) = info.inputs
    assert (inp.name, inp.channels, inp.divisor) == ("input", 3, 8)
    assert inp.min_size == (16, 16) and inp.max_size == (256, 256)
    assert inp.mean == (0.5, 0.5, 0.5) and inp.std == (0.25, 0.25, 0.25)
    assert [(o.name, o.spatial) for o in info.outputs] == [("logits", False)]


def test_sweep_covers_the_issue_sizes_and_passes(good_export):
    result, d = good_export
    rows = result.sweep.rows
    assert [(r.label, r.size, r.batch) for r in rows] == [
        ("export", "64x64", 1), ("0.5x", "32x32", 1), ("0.75x", "48x48", 1), ("1.5x", "96x96", 1),
        ("2x", "128x128", 1), ("non-square", "48x80", 1), ("batch 3", "64x64", 3),
    ]
    for r in rows:
        assert r.passed and r.error is None
        assert r.max_abs < 1e-5 and r.max_rel < 1e-5 and r.cosine > 0.999999
    report = json.loads((d / "report.json").read_text())
    assert report["ok"] is True and report["exporter"] == "dynamo"
    assert report["sweep"]["passed"] is True and len(report["sweep"]["rows"]) == 7
    assert report["sweep"]["rows"][5]["shapes"] == {"input": [1, 3, 48, 80]}
    table = result.sweep.table()
    assert [c.strip() for c in table.splitlines()[0].split("|")] == ["size", "batch", "max abs", "max rel", "cosine", "pass  case"]
    assert table.count("PASS") == 7


def test_onnx_matches_torch_outside_the_sweep(good_export, models):
    import onnxruntime as ort

    from mrdeploy.exporter.loading import build_model

    result, _ = good_export
    torch_model = build_model(f"{models}:good").eval()
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 3, 40, 200)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref, atol=1e-5)


def test_static_export_fixes_the_shape(models, tmp_path):
    result = export(f"{models}:good", "2x3x32x48", tmp_path / "s.onnx", dynamic=False, exporter="torchscript")
    dims = [d.dim_value for d in onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 32, 48]
    assert [(r.label, r.size, r.batch, r.passed) for r in result.sweep.rows] == [("export", "32x48", 2, True)]
    assert result.model_info.inputs[0].min_size == (32, 48) == result.model_info.inputs[0].max_size


def test_validate_sizes_override(models, tmp_path):
    result = export(f"{models}:good", (1, 3, 64, 64), tmp_path / "v.onnx", exporter="torchscript",
                    divisor=16, validate_sizes="32,96x48")
    assert [(r.label, r.size, r.batch) for r in result.sweep.rows] == [
        ("export", "64x64", 1), ("given", "32x32", 1), ("given", "96x48", 1), ("batch 3", "64x64", 3)]
    assert result.sweep.passed


def test_two_inputs_with_sizes_per_input(models, tmp_path):
    shapes = {"small": (1, 3, 16, 16), "large": (1, 3, 64, 48)}
    result = export(f"{models}:pair", shapes, tmp_path / "p.onnx", exporter="torchscript",
                    divisor={"small": 8, "large": 16}, validate_sizes="8/32,24x16/48x80")
    assert [(r.label, r.size, r.batch) for r in result.sweep.rows] == [
        ("export", "16x16 / 64x48", 1), ("given", "8x8 / 32x32", 1), ("given", "24x16 / 48x80", 1),
        ("batch 3", "16x16 / 64x48", 3)]
    assert result.sweep.passed and [i.divisor for i in result.model_info.inputs] == [8, 16]
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in onnx.load(str(result.path)).graph.input}
    assert dims["large"] == ["batch", 3, "large_height", "large_width"]
    _fails(tmp_path, r"validate size 40x40 of input 'large' is not a multiple of the divisor 16", f"{models}:pair",
           shape=shapes, divisor={"small": 8, "large": 16}, validate_sizes="16/40")
    _fails(tmp_path, r"expected HxW or one HxW per input \(2: \['small', 'large'\]\)", f"{models}:pair",
           shape=shapes, validate_sizes="16/32/48")
    _fails(tmp_path, r"divisor names unknown input\(s\) \['tiny'\]", f"{models}:pair", shape=shapes,
           divisor={"tiny": 8})


# --- the planted baked shape -------------------------------------------------------------------------


def test_baked_shape_is_caught_and_nothing_is_written(models, tmp_path):
    out = tmp_path / "baked.onnx"
    with pytest.raises(SweepError) as info:
        export(f"{models}:baked", (1, 3, 32, 32), out, report=tmp_path / "r.json")
    msg = str(info.value)
    assert "matches PyTorch at the export size 1x3x32x32 but not at other sizes" in msg
    assert "a shape was baked into the graph" in msg
    for size in ("1x3x16x16", "1x3x64x64", "1x3x24x40"):
        assert size in msg
    # dynamo specializes H/W (int(y.shape[2])), so auto falls back to TorchScript, which bakes the count
    assert "dynamo fixed dims the model declared dynamic (input height=32, width=32)" in msg
    rows = {r.size: r for r in info.value.report.rows if r.batch == 1}
    assert rows["32x32"].passed and not rows["64x64"].passed
    # sum / (32*32) instead of sum / (64*64): off by exactly 4x at 2x the export size
    assert rows["64x64"].max_rel == pytest.approx(3.0, rel=1e-3)
    assert rows["16x16"].max_rel == pytest.approx(0.75, rel=1e-3)
    assert not out.exists() and _leftovers(tmp_path, "baked.onnx") == []
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and "baked" in report["error"] and report["sweep"]["passed"] is False


def test_baked_shape_with_forced_dynamo_is_refused(models, tmp_path):
    out = tmp_path / "baked.onnx"
    with pytest.raises(ExportError, match=r"dynamo fixed dims .*input height=32, width=32.*Python int"):
        export(f"{models}:baked", (1, 3, 32, 32), out, exporter="dynamo")
    assert not out.exists() and _leftovers(tmp_path, "baked") == []


# --- bad input: one clear message, nothing at OUT ----------------------------------------------------


def _fails(tmp_path, match, model, shape=(1, 3, 32, 32), **kw):
    out = tmp_path / "out.onnx"
    with pytest.raises(MrdeployError, match=match):
        export(model, shape, out, exporter=kw.pop("exporter", "torchscript"), **kw)
    assert not out.exists() and _leftovers(tmp_path, "out.onnx") == []


def test_bad_model_specs(models, tmp_path):
    _fails(tmp_path, r"model spec 'nocolon' does not parse: expected 'package.module:factory'", "nocolon")
    _fails(tmp_path, r"file .*missing\.py does not exist", f"{tmp_path}/missing.py:build")
    _fails(tmp_path, r"module 'no_such_pkg_xyz.models' not found", "no_such_pkg_xyz.models:build")
    _fails(tmp_path, r"has no attribute 'nope'", f"{models}:nope")
    _fails(tmp_path, r"model factory .*:raises' raised ValueError: width must be positive", f"{models}:raises")
    _fails(tmp_path, r"returned a int, expected a torch nn.Module", f"{models}:not_a_module")


def test_bad_checkpoints(models, tmp_path):
    spec = f"{models}:good"
    from mrdeploy.exporter.loading import load_model

    good_state = load_model(spec).state_dict()

    not_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_dict)
    _fails(tmp_path, r"list\.pt holds a list, expected a state dict", spec, checkpoint=not_dict)

    strings = tmp_path / "strings.pt"
    torch.save({"conv.weight": "oops"}, strings)
    _fails(tmp_path, r"not a state dict of tensors: 'conv.weight' is a str", spec, checkpoint=strings)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    _fails(tmp_path, r"garbage\.pt cannot be loaded with torch.load\(weights_only=True\)", spec, checkpoint=garbage)

    renamed = dict(good_state)
    renamed["extra.bias"] = renamed.pop("head.bias")
    bad_keys = tmp_path / "keys.pt"
    torch.save({"state_dict": renamed}, bad_keys)
    _fails(tmp_path, r"does not match the model: missing keys: 'head.bias'; unexpected keys: 'extra.bias'", spec,
           checkpoint=bad_keys)

    wrong_shape = dict(good_state)
    wrong_shape["head.bias"] = torch.zeros(7)
    bad_shape = tmp_path / "shape.pt"
    torch.save(wrong_shape, bad_shape)
    _fails(tmp_path, r"shape mismatches: 'head.bias' \(7,\) vs model \(5,\)", spec, checkpoint=bad_shape)


def test_checkpoint_is_loaded_from_wrappers(models, tmp_path):
    from mrdeploy.exporter.loading import load_model

    spec = f"{models}:good"
    trained = load_model(spec, {"seed": 123})
    for i, wrapped in enumerate([
        {"model": trained.state_dict()},
        {"state_dict": trained.state_dict(), "epoch": torch.tensor(3)},
        {f"module.{k}": v for k, v in trained.state_dict().items()},
    ]):
        path = tmp_path / f"w{i}.pt"
        torch.save(wrapped, path)
        model = load_model(spec, {"seed": 0}, path)
        assert torch.equal(model.head.weight, trained.head.weight)


def test_bad_shapes_and_sizes(models, tmp_path):
    spec = f"{models}:good"
    _fails(tmp_path, r"input shape '1x3x224': expected 4 positive dims NxCxHxW, got 3 dims", spec, shape="1x3x224")
    _fails(tmp_path, r"input shape 'abc' does not parse: expected NxCxHxW", spec, shape="abc")
    _fails(tmp_path, r"example size 30x30 of input 'input' is not a multiple of the divisor 8 \(nearest valid: 32x32\)",
           spec, shape=(1, 3, 30, 30), divisor=8)
    _fails(tmp_path, r"min size 20x20 of input 'input' is not a multiple of the divisor 8", spec, divisor=8, min_size=20)
    _fails(tmp_path, r"validate size 100x100 of input 'input' is not a multiple of the divisor 8", spec,
           divisor=8, validate_sizes="64,100")
    _fails(tmp_path, r"example size 32x32 of input 'input' is above the max size 16x16", spec, max_size=16)
    _fails(tmp_path, r"the model's forward failed at the example shape \(input 1x1x32x32\): RuntimeError: ", spec,
           shape=(1, 1, 32, 32))
    _fails(tmp_path, r"2 output name\(s\) \['a', 'b'\] for a model with 1 output\(s\)", spec, output_names=["a", "b"])
    _fails(tmp_path, r"5 labels for a classifier with 3 classes", spec, model_args={"num_classes": 3},
           labels=list("abcde"))


def test_both_exporters_failing(models, tmp_path):
    _fails(tmp_path, r"both exporters failed\. dynamo: .*linalg_eigh.* \| torchscript: .*linalg_eigvalsh.*not supported",
           f"{models}:unexportable", shape=(1, 3, 8, 8), exporter="auto")


def test_shape_parsers():
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)
    assert parse_input_shapes(["template=1x3x128x128", "search=1x3x256x320"]) == {
        "template": (1, 3, 128, 128), "search": (1, 3, 256, 320)}
    assert parse_sizes("96,160,384x256") == [(96, 96), (160, 160), (384, 256)]
    with pytest.raises(ExportError, match="size '12y' does not parse"):
        parse_sizes("96,12y")
    with pytest.raises(ExportError, match="with several inputs give name=NxCxHxW"):
        parse_input_shapes(["1x3x8x8", "1x3x8x8"])


def test_plan_sizes_rounds_to_divisor_and_clamps():
    cases = plan_sizes({"input": (1, 3, 224, 224)}, {"input": 32}, {"input": (64, 64)}, {"input": (384, 384)})
    assert [(lbl, s["input"]) for lbl, s in cases] == [
        ("export", (1, 3, 224, 224)), ("0.5x", (1, 3, 128, 128)), ("0.75x", (1, 3, 160, 160)),
        ("1.5x", (1, 3, 320, 320)), ("2x", (1, 3, 384, 384)), ("non-square", (1, 3, 160, 288)),
        ("batch 3", (3, 3, 224, 224))]


def test_compare_numbers():
    ref = np.array([1.0, -2.0, 4.0], dtype=np.float32)
    max_abs, max_rel, cos, scale = compare(ref, ref + np.array([0, 0.5, 0], dtype=np.float32))
    assert (max_abs, max_rel, scale) == (0.5, 0.125, 4.0)
    assert cos == pytest.approx((1 + 3 + 16) / (np.sqrt(21) * np.sqrt(1 + 2.25 + 16)))
