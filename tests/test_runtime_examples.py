"""The runtime on the real example models (exported once per session, built with build_engine)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import mrdeploy.runtime as rt
from mrdeploy.cli import main
from mrdeploy.errors import InputError
from mrdeploy.runtime.images import load_input
from mrdeploy.runtime.resize import resize_bilinear
from tests.bundles import ort_run

# (H, W) -> (profile, action) under policy pad for the seg bundle below (divisor 16)
SEG_SIZES = {
    (64, 64): ("small", "exact"),
    (50, 90): ("small", "pad"),  # inside small's range, off the divisor: 64x96
    (128, 144): ("mid", "exact"),
    (224, 224): ("s224", "exact"),
    (180, 190): ("s224", "pad"),  # outside every profile: padded to the 224 profile
}


@pytest.fixture(scope="module")
def seg_bundle(exported, tmp_path_factory):
    from mrdeploy.exporter.build import build_engine

    out = tmp_path_factory.mktemp("ex") / "seg.bundle"
    return build_engine(exported("seg"), out, profiles=["small=32-96@64", "mid=112-160@128", "s224=224"],
                        threads=1, quiet=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from skimage import data

    d = tmp_path_factory.mktemp("exi")
    out = {}
    for (h, w), src in zip(SEG_SIZES, [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.coins()]):
        p = d / f"im_{h}x{w}.png"
        Image.fromarray(src).resize((w, h), Image.BILINEAR).save(p)
        out[(h, w)] = p
    return out


def test_seg_cli_five_sizes_match_source_model(seg_bundle, images, tmp_path, capsys):
    out_dir = tmp_path / "masks"
    try:
        main(["run", str(seg_bundle), *map(str, images.values()), "--out", str(out_dir), "--json"])
    except SystemExit as e:  # pragma: no cover - a failure shows in the assertion below
        assert e.code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    info = rt.Manifest.read(seg_bundle).model.inputs[0]
    for (h, w), rec in zip(images, records):
        assert (rec["profile"], rec["action"]) == SEG_SIZES[(h, w)], rec
        logits = np.load(out_dir / f"im_{h}x{w}_mask_logits.npy")
        assert logits.shape == (4, h, w)
        x = load_input(images[(h, w)], info)
        padded = np.zeros(rec["served"]["input"], np.float32)
        padded[..., :h, :w] = x
        ref = ort_run(seg_bundle / "model.onnx", {"input": padded})["mask_logits"][0, :, :h, :w]
        np.testing.assert_allclose(logits, ref, atol=1e-3, rtol=1e-3)
        mask = np.asarray(Image.open(out_dir / f"im_{h}x{w}_mask.png"))
        assert (mask == ref.argmax(0)).mean() > 0.999


def test_cnn_runner_policies_and_lru(exported, tmp_path):
    from mrdeploy.exporter.build import build_engine

    b = build_engine(exported("cnn"), tmp_path / "cnn.bundle", profiles=["small=32-64@48", "s128=128"],
                     threads=1, quiet=True)
    src = b / "model.onnx"
    rng = np.random.default_rng(0)
    with rt.load(b, max_loaded=1) as r:
        x = rng.standard_normal((1, 3, 48, 64)).astype(np.float32)
        np.testing.assert_allclose(r(x), ort_run(src, {"input": x})["logits"], atol=1e-4)
        assert r.last_decision.profile.name == "small" and r.last_decision.action == "exact"
        big = rng.standard_normal((1, 3, 200, 150)).astype(np.float32)
        y = r(big, policy="resize")
        assert (r.last_decision.profile.name, r.last_decision.action) == ("s128", "resize")
        ref = ort_run(src, {"input": resize_bilinear(big, (128, 128))})["logits"]
        np.testing.assert_allclose(y, ref, atol=1e-4)
        assert r.policy == "resize"  # a classifier's default: padding would move its prediction
        with pytest.raises(InputError, match="1x3x200x150 is outside every profile, larger than every profile's max"):
            r(big, policy="pad")
        assert r.loaded == ["s128"] and r.load_counts == {"small": 1, "s128": 1}
