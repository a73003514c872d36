"""``mrdeploy run`` and ``mrdeploy inspect`` end to end on PNG images of several sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mrdeploy.cli import main
from mrdeploy.runtime.images import load_input
from mrdeploy.runtime.modelinfo import ModelInfo
from mrdeploy.runtime.postprocess import softmax
from tests.bundles import make_bundle, model_info, ort_run

# (H, W) -> the profile expected to serve it under policy pad, and how
SIZES = {
    (48, 48): ("small", "exact"),
    (40, 60): ("small", "exact"),
    (100, 130): ("large", "exact"),
    (224, 224): ("s224", "exact"),
    (20, 28): ("small", "pad"),  # outside every profile: padded to small's min 32x32
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from skimage import data

    d = tmp_path_factory.mktemp("imgs")
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.camera(), data.rocket()]
    paths = {}
    for (h, w), src in zip(SIZES, sources):
        p = d / f"img_{h}x{w}.png"
        Image.fromarray(src).resize((w, h), Image.BILINEAR).save(p)
        paths[(h, w)] = p
    return paths


@pytest.fixture(scope="module")
def cls_bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("cli") / "cls", "cls")


def run_cli(capsys, *args):
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_five_sizes_served_by_expected_profiles(capsys, images, cls_bundle):
    code, out, err = run_cli(capsys, "run", cls_bundle, *images.values(), "--json", "--top-k", "3")
    assert code == 0, err
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert len(records) == 5
    info = ModelInfo.from_dict(json.loads((cls_bundle / "manifest.json").read_text())["model"])
    for (h, w), rec in zip(images, records):
        profile, action = SIZES[(h, w)]
        assert (rec["profile"], rec["action"], rec["size"]["input"]) == (profile, action, [1, 3, h, w])
        assert rec["latency_ms"] > 0
        # outputs match the source ONNX model on the (padded) preprocessed image
        x = load_input(images[(h, w)], info.inputs[0])
        served = rec["served"]["input"]
        padded = np.zeros(served, np.float32)
        padded[..., :h, :w] = x
        probs = softmax(ort_run(cls_bundle / "model.onnx", {"input": padded})["logits"][0])
        top = rec["top_k"][0]
        assert [t["index"] for t in top] == list(np.argsort(-probs)[:3])
        assert top[0]["prob"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert top[0]["label"] == info.labels[top[0]["index"]]


def test_run_text_output_and_policies(capsys, images, cls_bundle):
    code, out, _ = run_cli(capsys, "run", cls_bundle, images[(20, 28)], images[(100, 130)], "--top-k", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("img_20x28.png: 20x28 -> profile small (32-64@48), pad to 32x32, " + lines[0].split(", ")[-1])
    assert lines[0].split(", ")[-1].endswith(" ms")
    assert lines[1].lstrip().startswith("1. ") and lines[1].strip().endswith("%")
    assert "img_100x130.png: 100x130 -> profile large (96-160@128), exact" in out
    code, out, _ = run_cli(capsys, "run", cls_bundle, images[(20, 28)], "--policy", "resize", "--json", "--max-loaded", "1")
    assert json.loads(out)["action"] == "resize" and json.loads(out)["served"]["input"] == [1, 3, 48, 48]
    code, out, err = run_cli(capsys, "run", cls_bundle, images[(20, 28)], images[(48, 48)], "--policy", "error")
    assert code == 1
    assert "img_48x48.png: 48x48 -> profile small" in out  # the good input is still served
    assert "img_20x28.png: input 'input' 1x3x20x28 is outside every profile under policy 'error'" in err
    assert "mrdeploy: error: 1 of 2 input(s) could not be served" in err


def test_run_segmentation_writes_mask_and_logits(capsys, images, tmp_path):
    b = make_bundle(tmp_path / "seg", "seg", divisor=8, profiles=["small=32-64@48", "large=96-160@128"])
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "run", b, images[(100, 130)], "--out", out_dir)
    assert code == 0, err
    assert "profile large (96-160@128), pad to 104x136" in out
    logits = np.load(out_dir / "img_100x130_mask_logits.npy")
    assert logits.shape == (4, 100, 130)
    x = load_input(images[(100, 130)], model_info("seg", 8).inputs[0])
    padded = np.zeros((1, 3, 104, 136), np.float32)
    padded[..., :100, :130] = x
    ref = ort_run(b / "model.onnx", {"input": padded})["mask_logits"][0, :, :100, :130]
    np.testing.assert_allclose(logits, ref, atol=1e-5)
    mask = Image.open(out_dir / "img_100x130_mask.png")
    assert mask.mode == "P" and mask.size == (130, 100)
    np.testing.assert_array_equal(np.asarray(mask), ref.argmax(0))
    present = {model_info("seg").labels[i] for i in np.unique(ref.argmax(0))}
    assert all(f"{lab} " in out for lab in present)


def test_run_multi_input_and_npy(capsys, tmp_path):
    b = make_bundle(tmp_path / "two", "two", profiles=["a=template:32,search:64-128@96"])
    t = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    s = np.random.default_rng(1).standard_normal((1, 3, 80, 90)).astype(np.float32)
    np.save(tmp_path / "t.npy", t)
    np.save(tmp_path / "s.npy", s)
    code, out, err = run_cli(capsys, "run", b, f"template={tmp_path / 't.npy'}", f"search={tmp_path / 's.npy'}",
                             "--out", tmp_path / "o", "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["profile"] == "a" and rec["action"] == "exact"
    ref = ort_run(b / "model.onnx", {"template": t, "search": s})
    np.testing.assert_allclose(np.load(tmp_path / "o" / "t_response.npy"), ref["response"], atol=1e-6)
    code, _, err = run_cli(capsys, "run", b, tmp_path / "t.npy")
    assert code == 1 and "this model has inputs ['template', 'search']; give each as NAME=FILE" in err


def test_run_bad_bundle(capsys, tmp_path, images):
    code, _, err = run_cli(capsys, "run", tmp_path, images[(48, 48)])
    assert code == 1 and err.startswith("mrdeploy: error: ") and "expected manifest.json in it" in err
    assert "Traceback" not in err


def test_inspect_bundle_and_onnx(capsys, cls_bundle):
    code, out, _ = run_cli(capsys, "inspect", cls_bundle)
    assert code == 0
    manifest = json.loads((cls_bundle / "manifest.json").read_text())
    for p in manifest["profiles"]:
        assert p["name"] in out and p["sha256"][:12] in out and p["artifact"] in out
    assert "input  input: [batch, 3, height, width]  dynamic: batch, height, width" in out
    assert "task: classification" in out and "labels: airplane, bird, cat, dog, frog" in out
    assert "served range input: batch 1-1, height 32-224, width 32-224" in out
    assert "built with: mrdeploy 0.1.0, onnx " in out
    code, out, _ = run_cli(capsys, "inspect", cls_bundle, "--json")
    d = json.loads(out)
    assert d["kind"] == "bundle" and [p["name"] for p in d["profiles"]] == ["small", "large", "s224"]
    assert d["profiles"][1]["inputs"]["input"]["opt"] == [1, 3, 128, 128]
    code, out, _ = run_cli(capsys, "inspect", cls_bundle / "model.onnx")
    assert code == 0
    assert "input: float32 [batch, 3, height, width]  dynamic: batch, height, width" in out
    assert "logits: float32 [batch, 5]  dynamic: batch" in out
    assert "mrdeploy metadata:" in out and "model: tiny-cls  task: classification" in out
    code, out, _ = run_cli(capsys, "inspect", cls_bundle / "model.onnx", "--json")
    assert json.loads(out)["metadata"]["labels"][2] == "cat"


def test_inspect_corrupt_onnx(capsys, tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 10)
    code, _, err = run_cli(capsys, "inspect", tmp_path / "bad.onnx")
    assert code == 1 and "bad.onnx: not a readable ONNX model" in err
