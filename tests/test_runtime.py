"""The Runner: selection, pad/resize against the model run directly, bad inputs, LRU, threads, import cost."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

import mrdeploy.runtime as rt
from mrdeploy.errors import BackendUnavailable, BundleError, InputError, MrdeployError
from mrdeploy.runtime.resize import resize_bilinear
from tests.bundles import make_bundle, ort_run


@pytest.fixture(scope="module")
def cls_bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("rt") / "cls", "cls")


@pytest.fixture(scope="module")
def seg_bundle(tmp_path_factory):
    # divisor 8: sizes off the divisor are padded even inside a profile
    return make_bundle(
        tmp_path_factory.mktemp("rt") / "seg", "seg", divisor=8,
        profiles=["small=32-64@48", "wide=64x96-128x192@96x128", "s224=224"],
    )


@pytest.fixture(scope="module")
def cls_runner(cls_bundle):
    with rt.load(cls_bundle) as r:
        yield r


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- selection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hw, policy, profile, action, served",
    [
        ((48, 48), "pad", "small", "exact", (48, 48)),
        ((40, 60), "error", "small", "exact", (40, 60)),  # inside a range: no policy needed
        ((100, 130), "pad", "large", "exact", (100, 130)),
        ((224, 224), "error", "s224", "exact", (224, 224)),
        ((20, 20), "pad", "small", "pad", (32, 32)),  # below every min: padded up to small's min
        ((70, 90), "pad", "large", "pad", (96, 96)),  # between small and large
        ((170, 200), "pad", "s224", "pad", (224, 224)),
        ((70, 90), "resize", "small", "resize", (48, 48)),  # nearest opt: 48 (vs 128)
        ((300, 300), "resize", "s224", "resize", (224, 224)),
        ((20, 20), "resize", "small", "resize", (48, 48)),
    ],
)
def test_select(cls_runner, hw, policy, profile, action, served):
    d = cls_runner.select(1, *hw, policy=policy)
    assert (d.profile.name, d.action, d.served_shapes["input"]) == (profile, action, (1, 3, *served))
    assert d.input_shapes["input"] == (1, 3, *hw)


def test_select_triton_rule_prefers_nearest_opt(tmp_path):
    b = make_bundle(tmp_path / "ov", "cls", profiles=["a=32-160@48", "b=96-224@160"])
    with rt.load(b) as r:
        assert r.select(1, 100, 100).profile.name == "a"  # both contain 100; opt 48 is 52 away, 160 is 60
        assert r.select(1, 150, 150).profile.name == "b"
        assert r.select(1, 40, 40).profile.name == "a"


def test_select_off_divisor_pads_inside_profile(seg_bundle):
    with rt.load(seg_bundle) as r:
        d = r.select(1, 100, 130)
        assert (d.profile.name, d.action, d.served_shapes["input"]) == ("wide", "pad", (1, 3, 104, 136))
        assert r.select(1, 96, 128).action == "exact"
        assert str(d) == "profile wide=64x96-128x192@96x128: pad 1x3x100x130 -> 1x3x104x136"


def test_policy_error_message_lists_every_profile(cls_runner):
    with pytest.raises(InputError) as e:
        cls_runner.select(1, 200, 300, policy="error")
    msg = str(e.value)
    assert "input 'input' 1x3x200x300 is outside every profile under policy 'error'" in msg
    assert "small=32-64@48; large=96-160@128; s224=224" in msg
    with pytest.raises(InputError, match="larger than every profile's max, so it cannot be padded"):
        cls_runner.select(1, 200, 300, policy="pad")
    with pytest.raises(InputError, match="unknown policy 'crop'"):
        cls_runner.select(1, 48, 48, policy="crop")


def test_bundle_policy_and_load_override(tmp_path):
    b = make_bundle(tmp_path / "e", "cls", policy="error")
    with rt.load(b) as r:
        assert r.policy == "error"
        with pytest.raises(InputError, match="under policy 'error'"):
            r(rand(1, 3, 20, 20))
        assert r(rand(1, 3, 20, 20), policy="pad").shape == (1, 5)  # per call
    with rt.load(b, policy="resize") as r:
        r(rand(1, 3, 300, 200))
        assert r.last_decision.action == "resize" and r.last_decision.profile.name == "s224"


# --- results against the model run directly ----------------------------------------------------


def test_exact_matches_model(cls_bundle, cls_runner):
    x = rand(1, 3, 100, 130)
    ref = ort_run(cls_bundle / "model.onnx", {"input": x})["logits"]
    np.testing.assert_array_equal(cls_runner(x), ref)
    assert cls_runner.last_decision.action == "exact"


def test_hot_path_serves_a_repeated_exact_shape_with_every_check(cls_bundle, tmp_path):
    """A shape served exactly once goes through the short path after: same outputs, same decision, the
    same refusals; inputs it does not take (non-contiguous, float64, other shapes) take the full path."""
    x = rand(1, 3, 100, 130)
    ref = ort_run(cls_bundle / "model.onnx", {"input": x})["logits"]
    with rt.load(cls_bundle) as r:
        assert r._hot == {}
        np.testing.assert_array_equal(r(x), ref)  # full path, then remembered
        assert list(r._hot) == [(1, 3, 100, 130)]
        calls = []
        full = r.run_with_info
        r.run_with_info = lambda *a, **k: calls.append(1) or full(*a, **k)
        np.testing.assert_array_equal(r({"input": x}), ref)
        np.testing.assert_array_equal(r(x.copy()), ref)
        assert calls == [] and r.last_decision.profile.name == "large"
        bad = x.copy()
        bad[0, 1, 2, 3] = np.nan
        with pytest.raises(InputError, match=r"input 'input': expected finite values, got 1 NaN/Inf of 39000"):
            r(bad)
        wide = np.asfortranarray(x)  # not C-contiguous: the full path makes it so
        np.testing.assert_array_equal(r(wide), ref)
        np.testing.assert_array_equal(r(x.astype(np.float64)), ref)
        assert len(calls) == 3
        r.close()
        assert r._hot == {}
        with pytest.raises(MrdeployError, match="is closed"):
            r(x)
    with rt.load(cls_bundle, max_loaded=1) as r:  # engines may be evicted: every call takes the full path
        r(x)
        r(x)
        assert r._hot == {}


def test_run_profile_bypasses_selection(cls_bundle, cls_runner):
    x = rand(1, 3, 100, 100)
    ref = ort_run(cls_bundle / "model.onnx", {"input": x})["logits"]
    np.testing.assert_array_equal(cls_runner.run_profile("large", x)["logits"], ref)
    with pytest.raises(InputError, match=r"profile small=32-64@48 does not contain the input \(input 1x3x100x100\)"):
        cls_runner.run_profile("small", x)
    with pytest.raises(InputError, match="no profile 'huge'; this runner serves small, large, s224"):
        cls_runner.run_profile("huge", x)


def test_pad_then_crop_equals_model_on_padded_input(seg_bundle):
    x = rand(1, 3, 50, 75, seed=3)
    with rt.load(seg_bundle) as r:
        out, info = r.run_with_info(x)
    assert (info.decision.profile.name, info.decision.action) == ("wide", "pad")
    assert info.decision.served_shapes["input"] == (1, 3, 64, 96)
    padded = np.zeros((1, 3, 64, 96), np.float32)
    padded[:, :, :50, :75] = x
    ref = ort_run(seg_bundle / "model.onnx", {"input": padded})
    assert out["mask_logits"].shape == (1, 4, 50, 75)
    np.testing.assert_allclose(out["mask_logits"], ref["mask_logits"][..., :50, :75], rtol=0, atol=1e-6)
    assert out["coarse"].shape == (1, 4, 25, 38)  # stride 2: ceil(50/2), ceil(75/2)
    np.testing.assert_allclose(out["coarse"], ref["coarse"][..., :25, :38], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["pooled"], ref["pooled"], rtol=0, atol=1e-6)  # non-spatial: as served
    # padding really happened: the unpadded model disagrees near the bottom/right border
    direct = ort_run(seg_bundle / "model.onnx", {"input": x})
    assert np.abs(direct["pooled"] - out["pooled"]).max() > 1e-3


def test_resize_equals_model_on_resized_input(seg_bundle):
    x = rand(1, 3, 300, 260, seed=4)
    with rt.load(seg_bundle, policy="resize") as r:
        out, info = r.run_with_info(x)
    assert (info.decision.profile.name, info.decision.action) == ("s224", "resize")
    xr = resize_bilinear(x, (224, 224))
    ref = ort_run(seg_bundle / "model.onnx", {"input": xr})
    assert out["mask_logits"].shape == (1, 4, 300, 260)
    np.testing.assert_allclose(out["mask_logits"], resize_bilinear(ref["mask_logits"], (300, 260)), atol=1e-5)
    assert out["coarse"].shape == (1, 4, 150, 130)
    np.testing.assert_allclose(out["pooled"], ref["pooled"], atol=1e-6)


def test_resize_matches_torch_bilinear():
    torch = pytest.importorskip("torch")
    x = rand(2, 3, 37, 53)
    for size in [(64, 64), (20, 31), (37, 100), (1, 1)]:
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(resize_bilinear(x, size), ref.numpy(), atol=5e-5)


def test_multi_input_model(tmp_path):
    b = make_bundle(
        tmp_path / "two", "two",
        profiles=["a=template:32,search:64-128@96", "b=template:32,search:160-224@192"],
    )
    with rt.load(b) as r:
        d = r.select({"template": (1, 32, 32), "search": (1, 100, 150)})
        assert (d.profile.name, d.action) == ("b", "pad")
        assert d.served_shapes == {"template": (1, 3, 32, 32), "search": (1, 3, 160, 160)}
        t, s = rand(1, 3, 32, 32), rand(1, 3, 100, 150, seed=1)
        out = r.run({"template": t, "search": s})
        padded = np.zeros((1, 3, 160, 160), np.float32)
        padded[..., :100, :150] = s
        ref = ort_run(b / "model.onnx", {"template": t, "search": padded})
        # response follows "search" (its served size matches), cropped back to 100x150
        np.testing.assert_allclose(out["response"], ref["response"][..., :100, :150], atol=1e-6)
        np.testing.assert_allclose(out["score"], ref["score"], atol=1e-6)
        with pytest.raises(InputError, match=r"expected inputs \['template', 'search'\], got \['search'\] \(missing \['template'\]\)"):
            r.run({"search": s})
        with pytest.raises(InputError, match="select\\(batch, h, w\\) is for single-input models"):
            r.select(1, 64, 64)


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((3, 48, 48), np.float32), r"expected rank 4 \(N, C, H, W\), got shape \(3, 48, 48\) \(add the batch axis"),
        (np.zeros((48, 48, 3), np.float32), r"got shape \(48, 48, 3\) \(this looks like an HWC image"),
        (np.zeros((1, 1, 48, 48), np.float32), r"expected 3 channels \(N, 3, H, W\), got 1 in shape \(1, 1, 48, 48\)"),
        (np.zeros((1, 3, 48, 48), np.uint8), r"expected float32 .*, got uint8"),
        (np.zeros((1, 3, 48, 48), np.int64), r"got int64"),
        (np.zeros((1, 3, 0, 48), np.float32), r"at least 1, got shape \(1, 3, 0, 48\)"),
        (np.full((1, 3, 48, 48), np.nan, np.float32), r"expected finite values, got 6912 NaN/Inf of 6912"),
        (np.where(np.eye(48, dtype=bool), np.inf, 0).astype(np.float32)[None, None].repeat(3, 1),
         r"got 144 NaN/Inf"),
        (np.zeros((4, 3, 48, 48), np.float32), r"batch size input 4 is outside every profile's batch range \(small: 1-1"),
    ],
)
def test_bad_input_messages(cls_runner, x, message):
    with pytest.raises(InputError, match=message) as e:
        cls_runner(x)
    assert "input" in str(e.value)


def test_input_names_and_casts(cls_runner):
    with pytest.raises(InputError, match=r"expected inputs \['input'\], got \['image'\] \(missing \['input'\]; unknown \['image'\]\)"):
        cls_runner.run({"image": rand(1, 3, 48, 48)})
    with pytest.raises(InputError, match=r"unknown \['extra'\]"):
        cls_runner.run({"input": rand(1, 3, 48, 48), "extra": rand(1)})
    x = rand(1, 3, 48, 48)
    y32 = cls_runner(x)
    np.testing.assert_allclose(cls_runner(x.astype(np.float64)), y32, atol=1e-6)  # cast, no surprise
    np.testing.assert_allclose(cls_runner(x.astype(np.float16)), y32, atol=2e-2)


def test_batch_range(tmp_path):
    b = make_bundle(tmp_path / "b", "cls", profiles=["small=32-64@48", "large=96-160@128"], batch="1-4@2")
    with rt.load(b) as r:
        x = rand(3, 3, 50, 60)
        out = r(x)
        assert out.shape == (3, 5)
        np.testing.assert_allclose(out, ort_run(b / "model.onnx", {"input": x})["logits"], atol=1e-6)
        with pytest.raises(InputError, match=r"batch size input 5 is outside every profile's batch range \(small: 1-4, large: 1-4\)"):
            r(rand(5, 3, 50, 60))


# --- engines: lazy, LRU, threads -----------------------------------------------------------------


def test_lazy_load_and_lru(cls_bundle):
    with rt.load(cls_bundle, max_loaded=1) as r:
        assert r.loaded == [] and sum(r.load_counts.values()) == 0  # nothing loaded by load()
        r(rand(1, 3, 48, 48))
        r(rand(1, 3, 48, 48))
        assert r.loaded == ["small"] and r.load_counts == {"small": 1}
        r(rand(1, 3, 128, 128))
        assert r.loaded == ["large"] and r.load_counts == {"small": 1, "large": 1}
        r(rand(1, 3, 48, 48))
        assert r.loaded == ["small"] and r.load_counts["small"] == 2
    with rt.load(cls_bundle, max_loaded=2) as r:
        for hw in [(48, 48), (128, 128), (48, 48), (224, 224)]:  # large is least recently used at the end
            r(rand(1, 3, *hw))
        assert r.loaded == ["small", "s224"] and r.load_counts == {"small": 1, "large": 1, "s224": 1}
    with pytest.raises(InputError, match="max_loaded must be at least 1, got 0"):
        rt.load(cls_bundle, max_loaded=0)


def test_warmup_loads_every_profile(cls_bundle):
    with rt.load(cls_bundle) as r:
        times = r.warmup()
        assert list(times) == ["small", "large", "s224"] and all(t > 0 for t in times.values())
        assert sorted(r.loaded) == ["large", "s224", "small"]
    with pytest.raises(MrdeployError, match="is closed"):
        r(rand(1, 3, 48, 48))


def test_threads_match_sequential(seg_bundle):
    rng = np.random.default_rng(7)
    sizes = [(48, 48), (40, 56), (100, 130), (224, 224), (20, 30), (96, 128), (64, 64), (120, 180)]
    xs = [rng.standard_normal((1, 3, *sizes[i % len(sizes)])).astype(np.float32) for i in range(96)]
    with rt.load(seg_bundle) as r:
        expected = [r.run(x) for x in xs]
    with rt.load(seg_bundle, max_loaded=1, threads=1) as r:  # eviction under contention
        results: list = [None] * len(xs)
        errors = []

        def work(k):
            try:
                for i in range(k, len(xs), 8):
                    results[i] = r.run(xs[i])
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sum(r.load_counts.values()) >= 3 and len(r.loaded) == 1
    for got, want in zip(results, expected):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)


# --- ONNX Runtime sessions -----------------------------------------------------------------------


def test_session_options_from_manifest(tmp_path):
    from mrdeploy.runtime.backends.onnxruntime import trt_profile_shapes

    b = make_bundle(tmp_path / "o", "cls", options={
        "session": {"intra_op_num_threads": 2, "graph_optimization_level": "basic"}})
    with rt.load(b) as r:
        r(rand(1, 3, 48, 48))
        engine = r._engines["small"]
        so = engine.session.get_session_options()
        assert so.intra_op_num_threads == 2
        assert str(so.graph_optimization_level).endswith("ORT_ENABLE_BASIC")
        assert engine.providers == ["CPUExecutionProvider"]
        assert trt_profile_shapes(r.profiles[1]) == {
            "trt_profile_min_shapes": "input:1x3x96x96",
            "trt_profile_opt_shapes": "input:1x3x128x128",
            "trt_profile_max_shapes": "input:1x3x160x160",
        }
    with rt.load(b, threads=1) as r:
        r(rand(1, 3, 48, 48))
        assert r._engines["small"].session.get_session_options().intra_op_num_threads == 1
    bad = make_bundle(tmp_path / "bad", "cls", options={"graph_optimization_level": "max"})
    with rt.load(bad) as r, pytest.raises(BundleError, match="unknown graph_optimization_level 'max'"):
        r(rand(1, 3, 48, 48))


def test_trt_profile_shapes_multi_input():
    from mrdeploy.runtime.backends.onnxruntime import provider_names, trt_profile_shapes
    from mrdeploy.runtime.profiles import make_profile, parse_profile

    p = make_profile(parse_profile("t=template:112-128@128,search:224-384@256"), {"template": 3, "search": 3},
                     batch=(1, 2, 4))
    assert trt_profile_shapes(p)["trt_profile_max_shapes"] == "template:4x3x128x128,search:4x3x384x384"
    assert trt_profile_shapes(p)["trt_profile_opt_shapes"] == "template:2x3x128x128,search:2x3x256x256"
    assert provider_names("tensorrt,cuda") == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_unavailable_provider(cls_bundle):
    with rt.load(cls_bundle, providers=["cuda"]) as r, pytest.raises(BackendUnavailable) as e:
        r(rand(1, 3, 48, 48))
    assert "CUDAExecutionProvider not available here; installed:" in str(e.value)
    assert "CPUExecutionProvider" in str(e.value)


def test_backend_filter_and_tensorrt_guard(cls_bundle, tmp_path):
    with pytest.raises(BundleError, match="no profile built for backend 'tensorrt'; the bundle has onnxruntime"):
        rt.load(cls_bundle, backend="tensorrt")
    b = tmp_path / "trt"
    import shutil

    shutil.copytree(cls_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    m["profiles"][0].update(backend="tensorrt", options={"tensorrt_version": "10.16.1.11"})
    (b / "manifest.json").write_text(json.dumps(m))
    with rt.load(b) as r, pytest.raises(BackendUnavailable, match="needs TensorRT .* and a CUDA GPU"):
        r(rand(1, 3, 48, 48))


def test_load_verifies_hashes(cls_bundle, tmp_path):
    import shutil

    b = tmp_path / "v"
    shutil.copytree(cls_bundle, b)
    (b / "profiles" / "s224.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match="profile 's224': artifact .*s224.onnx has changed: expected sha256"):
        rt.load(b)
    # verify=False defers to the backend, which names the profile and file
    with rt.load(b, verify=False) as r, pytest.raises(BundleError, match="profile 's224': ONNX Runtime cannot load"):
        r(rand(1, 3, 224, 224))
    (b / "model.onnx").unlink()  # the source model is not needed to serve
    with rt.load(b, backend="onnxruntime", verify=False):
        pass


def test_import_is_light():
    code = (
        "import sys, time; t = time.perf_counter(); import mrdeploy.runtime, mrdeploy.runtime.images; "
        "dt = time.perf_counter() - t; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'PIL', 'tensorrt')]; "
        "print(dt, bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert out[1].strip() == "[]"
    assert float(out[0]) < 0.5
