"""The example datasets and the committed, trained checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from examples import data
from examples.zoo import ROOT, get_spec


def test_digits_split_is_fixed_and_disjoint():
    tr, ytr = data.digits("train")
    ho, yho = data.digits("heldout")
    assert len(tr) + len(ho) == 1797 and len(ho) == 359
    assert tr.min() >= 0 and tr.max() <= 1 and tr.dtype == np.float32
    flat_tr = {img.tobytes() for img in tr}
    assert sum(img.tobytes() in flat_tr for img in ho) < 5  # digits has a few exact duplicates, no overlap by index
    tr2, _ = data.digits("train")
    assert np.array_equal(tr, tr2)
    assert set(np.unique(yho)) == set(range(10))


def test_digits_at_any_size_matches_torch_bilinear():
    imgs, _ = data.digits("heldout")
    x = data.digits_at(imgs[:3], (40, 72), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert x.shape == (3, 3, 40, 72)
    ref = torch.nn.functional.interpolate(torch.from_numpy(imgs[:3, None]), (40, 72), mode="bilinear",
                                          align_corners=False).numpy()
    np.testing.assert_allclose(x[:, 0], (ref[:, 0] - 0.5) / 0.5, atol=1e-5)
    assert np.array_equal(x[:, 0], x[:, 2])


def test_shapes_scenes_are_seeded_and_labelled():
    x, m = data.shapes_batch(6, (48, 80), seed=5)
    x2, m2 = data.shapes_batch(6, (48, 80), seed=5)
    assert x.shape == (6, 3, 48, 80) and m.shape == (6, 48, 80)
    assert np.array_equal(x, x2) and np.array_equal(m, m2)
    assert set(np.unique(m)) <= {0, 1, 2, 3} and len(np.unique(m)) >= 3
    assert not np.array_equal(m, data.shapes_batch(6, (48, 80), seed=6)[1])
    assert data.miou(m, m) == 1.0
    assert data.miou(np.zeros_like(m), m) < 0.5


def test_write_image_folder_sizes(tmp_path):
    from PIL import Image

    paths = data.write_image_folder(tmp_path, n=5, sizes=[(40, 60), 96], kind="shapes")
    sizes = [Image.open(p).size for p in paths]  # (W, H)
    assert sizes == [(60, 40), (96, 96), (60, 40), (96, 96), (60, 40)]
    assert {p.parent.name for p in paths} == {"a", "b"}


# sizes never used in training: the classifiers trained on squares with sides on a 16-pixel grid, the
# segmenter on 32..128 (its later stages are recorded in the checkpoint's JSON)
NEVER_TRAINED = {"vit": [(72, 72), (96, 160)], "cnn": [(96, 160), (120, 120)], "seg": [(160, 160), (72, 120)]}
FLOORS = {"vit": 0.7, "cnn": 0.7, "seg": 0.4}  # chance: 0.1 top-1 (10 digits); ~0.2 mIoU (all background)


@pytest.mark.parametrize("name", ["vit", "cnn", "seg"])
def test_checkpoint_is_committed_small_and_trained(name):
    spec = get_spec(name)
    path = ROOT / spec.checkpoint
    assert path.is_file(), f"{path} missing: run python -m examples.train {name}"
    assert path.stat().st_size < 3.5e6
    report = json.loads(path.with_suffix(".json").read_text())
    assert len(report["fp32"]) >= 6 and report["steps"] >= 300
    from examples.train import build_example

    model = build_example(name)
    for h, w in NEVER_TRAINED[name]:
        assert h % 16 or w % 16 or h != w or h not in report["train_sizes"] or name == "seg"
        with torch.no_grad():
            if spec.task == "segmentation":
                x, m = data.shapes_batch(12, (h, w), seed=data.HELDOUT_SHAPES_SEED, mean=spec.mean, std=spec.std)
                value = data.miou(model(torch.from_numpy(x)).argmax(1).numpy(), m)
            else:
                x, y = data.digits_batch((h, w), "heldout", n=120, mean=spec.mean, std=spec.std)
                value = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
        assert value >= FLOORS[name], f"{name} at never-trained {h}x{w}: {value:.3f} < {FLOORS[name]}"
