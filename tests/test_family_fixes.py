"""Issue 11's fixes, each with the model that showed it: batch-1 ViT export, the TorchScript fallback
after a failed sweep, crop-back by each output's size rule, planner/runtime agreement, letterbox and
pad modes, odd/prime sweep sizes and grid-only exactness, and the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mrdeploy.exporter.spatial import infer_rules
from mrdeploy.runtime.dispatch import decide
from mrdeploy.runtime.fitting import fit_inputs, pad_to, restore_outputs
from mrdeploy.runtime.modelinfo import InputInfo, ModelInfo, OutputInfo
from mrdeploy.runtime.profiles import make_profile, parse_profile
from tests.family_models import Heads, standard_vit


def _profile(text, index=0, divisor=1):
    return make_profile(parse_profile(text), {"input": 3}, divisor=divisor, index=index)


def test_standard_vit_exports_from_a_batch_1_example(tmp_path):
    """dynamo specialized the batch at 1 and TorchScript lacked the fused MHA op: 'both exporters failed'."""
    import onnx

    from mrdeploy.exporter import export

    r = export(standard_vit(), (1, 3, 112, 112), tmp_path / "vit.onnx")
    assert r.exporter == "dynamo" and r.fallback_reason is None
    assert r.sweep.passed and len(r.sweep.rows) >= 7
    assert any(row.batch == 3 for row in r.sweep.rows)
    dims = onnx.load(str(tmp_path / "vit.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")


def test_torchscript_export_of_mha_no_longer_fails_on_the_fused_op(tmp_path):
    from mrdeploy.exporter.onnx_export import export_onnx

    raw = export_onnx(standard_vit(), {"input": torch.randn(1, 3, 112, 112)}, ["logits"], exporter="torchscript")
    assert raw.exporter == "torchscript"
    assert not any("_native_multi_head_attention" in n.op_type for n in raw.model.graph.node)


def test_output_rules_follow_pytorch_floor_round_up_and_upscale():
    model = Heads().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        refs = model(x)
    infos = [OutputInfo(n, True) for n in ("p16", "p4", "s2", "up")]
    got, notes = infer_rules(model, {"input": x}, refs, infos, {"input": 1}, {"input": None}, {"input": None})
    assert notes == []
    by = {o.name: o for o in got}
    assert by["p16"].scale == (1 / 16, 1 / 16) and by["up"].scale == (2.0, 2.0)
    for hw in [(200, 200), (150, 171), (45, 61), (33, 97)]:
        with torch.no_grad():
            outs = model(torch.randn(1, 3, *hw))
        for o, t in zip(got, outs):
            assert o.size_at(hw) == tuple(t.shape[-2:]), (o.name, hw)
    assert by["p16"].size_at((200, 200)) == (12, 12)  # the bundle used to give 13x13 (ceil)
    assert by["p4"].size_at((150, 171)) == (37, 42)  # and 38x43 here


def test_pad_crops_each_output_back_by_its_rule():
    info = {o.name: o for o in (
        OutputInfo("score", True, 16, scale=(1 / 16, 1 / 16), offset=(0, 0), source="search"),
        OutputInfo("sr", True, 1, scale=(2.0, 2.0), offset=(0, 0), source="search"),
        OutputInfo("vec"),
    )}
    p = make_profile(parse_profile("template:64,search:224"), {"template": 3, "search": 3})
    d = decide([p], {"template": (1, 3, 64, 64), "search": (1, 3, 200, 200)}, "pad", {"template": 1, "search": 1})
    assert d.action == "pad" and d.served_shapes["search"] == (1, 3, 224, 224)
    outs = {"score": np.ones((1, 1, 14, 14), np.float32), "sr": np.ones((1, 3, 448, 448), np.float32),
            "vec": np.ones((1, 4), np.float32)}
    got = restore_outputs(outs, d, info, ["template", "search"])
    assert got["score"].shape == (1, 1, 12, 12)  # PyTorch's floor(200 / 16), not 13
    assert got["sr"].shape == (1, 3, 400, 400)  # 2x the input, not the top-left quarter
    assert got["vec"].shape == (1, 4)


def test_spatial_outputs_default_to_a_policy_that_keeps_geometry():
    from mrdeploy.exporter.build import default_policy

    assert default_policy("classification", [OutputInfo("response", True, 16)]) == "pad"
    assert default_policy("classification", [OutputInfo("logits")]) == "resize"
    assert default_policy("segmentation") == "pad"


def test_letterbox_keeps_aspect_and_crops_outputs_back():
    p = _profile("96")
    d = decide([p], {"input": (1, 3, 40, 56)}, "letterbox", {"input": 1})
    assert d.action == "letterbox"
    assert d.served_shapes["input"] == (1, 3, 96, 96) and d.content_shapes["input"] == (1, 3, 69, 96)
    yy, xx = np.mgrid[0:40, 0:56]
    x = np.broadcast_to(np.sin(yy / 7.0) + np.cos(xx / 9.0), (1, 3, 40, 56)).astype(np.float32)
    fed = fit_inputs({"input": x}, d, "zero")["input"]
    assert fed.shape == (1, 3, 96, 96) and np.all(fed[:, :, 69:] == 0) and np.abs(fed[:, :, :69]).sum() > 0
    info = {"mask": OutputInfo("mask", True, 1, scale=(1.0, 1.0), source="input")}
    y = restore_outputs({"mask": fed.copy()}, d, info, ["input"])["mask"]
    assert y.shape == (1, 3, 40, 56)
    assert float(np.abs(y - x).max()) < 0.05 * float(np.abs(x).max())  # the content came back, not padding


def test_pad_modes_fill_as_named():
    a = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    assert pad_to(a, (1, 1, 3, 4), "zero")[0, 0].tolist() == [[0, 1, 2, 0], [3, 4, 5, 0], [0, 0, 0, 0]]
    assert pad_to(a, (1, 1, 3, 4), "edge")[0, 0].tolist() == [[0, 1, 2, 2], [3, 4, 5, 5], [3, 4, 5, 5]]
    assert pad_to(a, (1, 1, 3, 4), "reflect")[0, 0].tolist() == [[0, 1, 2, 1], [3, 4, 5, 4], [0, 1, 2, 1]]
    assert pad_to(a, (1, 1, 6, 3), "reflect").shape == (1, 1, 6, 3)  # pad longer than the side
    with pytest.raises(ValueError, match="expected one of zero, reflect, edge"):
        pad_to(a, (1, 1, 3, 4), "wrap")


def test_manifest_records_the_pad_mode(tmp_path):
    from mrdeploy.errors import BundleError
    from mrdeploy.runtime.manifest import Manifest
    from tests.bundles import make_bundle

    bundle = make_bundle(tmp_path / "b", "seg", ["32-64@48"])
    d = json.loads((bundle / "manifest.json").read_text())
    assert Manifest.from_dict(d).pad_mode == "zero"  # older manifests: zeros
    d["pad_mode"] = "reflect"
    assert Manifest.from_dict(d).pad_mode == "reflect"
    assert Manifest.from_dict(d).to_dict()["pad_mode"] == "reflect"
    d["pad_mode"] = "mirror"
    with pytest.raises(BundleError, match="unknown pad_mode 'mirror', expected one of zero, reflect, edge"):
        Manifest.from_dict(d)


def _sizes(n=100, seed=0):
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(80, 160)), int(rng.integers(100, 200))) for _ in range(n)]


@pytest.mark.parametrize("mode", ["ranged", "static"])
def test_every_size_the_plan_counted_is_served_by_a_profile_holding_it(tmp_path, mode):
    """Ranged plans had min = the rounded-up size (96x117 outside 88x120-112x144): 21 of 100 resized."""
    from mrdeploy.planning import file_policy, plan_profiles

    sizes = _sizes()
    plan = plan_profiles(sizes, 3, divisor=8, mode=mode)
    profiles = [_profile(s, i, 8) for i, s in enumerate(plan.profile_strings())]
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps(plan.to_file_dict()))
    policy = file_policy(path)
    assert policy == "pad"
    for h, w in sizes:
        shape = (1, 3, h, w)
        d = decide(profiles, {"input": shape}, policy, {"input": 8})
        assert d.action in ("exact", "pad"), (h, w, d)
        served = d.served_shapes["input"]
        assert served[2] >= h and served[3] >= w and d.profile.contains({"input": served})
        if mode == "ranged":  # inside a profile's own range: kept under any policy
            d = decide(profiles, {"input": shape}, "resize", {"input": 8})
            assert d.action in ("exact", "pad") and d.profile.contains({"input": shape}), (h, w, d)


def test_sweep_tries_odd_and_prime_sizes_without_a_divisor():
    from mrdeploy.exporter.sweep import plan_sizes

    ex = {"input": (1, 3, 112, 112)}
    none = {"input": None}
    cases = dict(plan_sizes(ex, {"input": 1}, none, none))
    assert cases["odd"]["input"][2] % 2 == 1 and cases["prime"]["input"][2:] == (101, 149)
    assert "odd" not in dict(plan_sizes(ex, {"input": 16}, none, none))


def test_grid_only_exactness_is_found_and_accepted():
    from mrdeploy.exporter.sweep import SweepReport, SweepRow, check, exact_grid

    def row(h, w, ok):
        return SweepRow({"input": [1, 3, h, w]}, "x", max_abs=0.0 if ok else 1e-3, max_rel=0.0 if ok else 4.5e-4, passed=ok)

    rep = SweepReport([row(64, 64, True), row(32, 48, True), row(77, 77, False), row(100, 150, False)], 1e-4, 1e-4)
    assert exact_grid(rep) == 16
    rep.grid = 16
    check(rep)  # accepted: off-grid rows are served padded to the recorded divisor
    assert "OFF-GRID" in rep.table()
    bad = SweepReport([row(64, 64, True), row(48, 48, True), row(80, 80, False)], 1e-4, 1e-4)
    assert exact_grid(bad) is None  # 80 is on the grid of 16 and fails: a real failure


def test_parity_and_bench_stay_callable_after_first_use():
    import importlib

    import mrdeploy

    importlib.import_module("mrdeploy.parity")
    importlib.import_module("mrdeploy.bench")
    assert callable(mrdeploy.parity) and callable(mrdeploy.bench)
    assert mrdeploy.parity.ParityReport is not None  # still the module, too


def test_split_references_takes_an_nn_module(tmp_path):
    from mrdeploy.references import reference_label, split_references

    m = torch.nn.Conv2d(3, 3, 1)
    onnx_path, ref = split_references(m, None, tmp_path, "model.onnx")
    assert ref is m and onnx_path == tmp_path / "model.onnx"
    assert reference_label(ref) == "Conv2d (nn.Module)"
    onnx_path, ref = split_references([str(tmp_path / "x.onnx"), m], None, tmp_path, "model.onnx")
    assert ref is m and onnx_path == tmp_path / "x.onnx"


def test_calibration_profiles_without_min_max_size_metadata():
    """`mrdeploy calibrate` crashed with KeyError: 'input' unless both min and max sizes were recorded."""
    from mrdeploy.calibration.api import resolve_profiles

    info = ModelInfo("m", "classification", [InputInfo("input", 3, min_size=(16, 16))], [OutputInfo("logits")])
    (p,) = resolve_profiles(["32-64@48"], info)
    assert p.inputs["input"].max[-2:] == (64, 64)
    info = ModelInfo("m", "classification", [InputInfo("input", 3)], [OutputInfo("logits")])
    assert resolve_profiles(["32"], info)[0].inputs["input"].opt[-2:] == (32, 32)


def test_export_records_rules_in_the_metadata(tmp_path):
    from mrdeploy.exporter import export

    class SR(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 12, 3, 1, 1)
            self.s = torch.nn.PixelShuffle(2)

        def forward(self, x):
            return self.s(self.c(x))

    torch.manual_seed(0)
    r = export(SR(), (1, 3, 32, 32), tmp_path / "sr.onnx", task="dense", validate_sizes="24,40x56")
    (o,) = r.model_info.outputs
    assert o.spatial and o.scale == (2.0, 2.0) and o.offset == (0, 0) and o.source == "input"
    assert Path(tmp_path / "sr.onnx").is_file()
