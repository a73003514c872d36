"""Parity metrics on hand-made arrays with known answers, and the size helpers."""

from __future__ import annotations

import numpy as np
import pytest

from mrdeploy import metrics as M
from mrdeploy.errors import InputError
from mrdeploy.evaldata import parse_sizes, point_label, point_side


def one_hot_logits(classes: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W) class maps -> (N, k, H, W) logits whose argmax is the class."""
    return np.moveaxis(np.eye(k, dtype=np.float32)[classes], -1, 1)


def test_cosine_known_values():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    # per sample: 1, 0, -1 -> mean 0
    assert M.cosine(a, b) == pytest.approx(0.0)
    assert M.cosine(a[:2], b[:2]) == pytest.approx(0.5)
    x = np.array([[3.0, 4.0]])
    y = np.array([[4.0, 3.0]])
    assert M.cosine(x, y) == pytest.approx(24 / 25)
    # zero outputs: both zero -> 1, one zero -> 0
    assert M.cosine(np.zeros((1, 3)), np.zeros((1, 3))) == 1.0
    assert M.cosine(np.zeros((1, 3)), np.ones((1, 3))) == 0.0


def test_cosine_is_per_sample_on_spatial_outputs():
    a = np.ones((2, 4, 3, 3), np.float32)
    b = a.copy()
    b[1] = -1
    assert M.cosine(a, b) == pytest.approx(0.0)


def test_max_and_mean_abs_error():
    a = np.array([[0.0, 1.0, 2.0]], np.float32)
    b = np.array([[0.5, 1.0, -1.0]], np.float32)
    assert M.max_abs_error(a, b) == pytest.approx(3.0)
    assert M.mean_abs_error(a, b) == pytest.approx(3.5 / 3)
    with pytest.raises(ValueError, match=r"outputs differ in shape: \(1, 3\) vs \(3,\)"):
        M.max_abs_error(a, b[0])


def test_top1_agreement_and_accuracy():
    a = np.array([[9, 0, 0], [0, 9, 0], [0, 0, 9], [0, 9, 0]], np.float32)  # argmax 0 1 2 1
    b = np.array([[9, 0, 0], [0, 9, 0], [9, 0, 0], [0, 0, 9]], np.float32)  # argmax 0 1 0 2
    assert M.top1_agreement(a, b) == 0.5
    assert M.top1_accuracy(a, np.array([0, 1, 2, 2])) == 0.75
    with pytest.raises(ValueError, match="expected 4 labels, got 3"):
        M.top1_accuracy(a, np.array([0, 1, 2]))


def test_miou_known_values():
    pred = np.array([0, 0, 1, 1])
    target = np.array([0, 1, 1, 1])
    # class 0: inter 1 / union 2; class 1: inter 2 / union 3; class 2 absent from both: ignored
    assert M.miou(pred, target, 3) == pytest.approx((0.5 + 2 / 3) / 2)
    assert M.miou(target, target, 3) == 1.0
    assert M.miou(np.zeros(4, int), np.ones(4, int), 2) == 0.0


def test_miou_matches_the_example_datasets_definition():
    from examples.data import miou as data_miou

    rng = np.random.default_rng(1)
    pred, target = rng.integers(0, 4, (2, 17, 23)), rng.integers(0, 4, (2, 17, 23))
    assert M.miou(pred, target, 4) == pytest.approx(data_miou(pred, target, 4))


def test_pixel_and_miou_agreement_on_logits():
    ref = np.array([[[0, 0], [1, 1]]])  # (1, 2, 2) class map
    cand = np.array([[[0, 1], [1, 1]]])
    a, b = one_hot_logits(cand, 3), one_hot_logits(ref, 3)
    assert M.pixel_agreement(a, b) == 0.75
    # vs ref as ground truth: class 0 inter 1 union 2 = 0.5, class 1 inter 2 union 3
    assert M.miou_agreement(a, b) == pytest.approx((0.5 + 2 / 3) / 2)
    assert M.class_map(a).tolist() == cand.tolist()
    with pytest.raises(ValueError, match=r"expected segmentation logits \(N, C, H, W\), got shape \(2, 3\)"):
        M.class_map(np.zeros((2, 3)))


def test_resize_nearest():
    x = np.arange(4).reshape(1, 1, 2, 2)
    assert M.resize_nearest(x, (4, 4))[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert M.resize_nearest(x, (2, 2)) is x


def test_parse_sizes():
    pts = parse_sizes("96, 128,200x160", ["input"])
    assert pts == [{"input": (96, 96)}, {"input": (128, 128)}, {"input": (200, 160)}]
    assert [point_label(p) for p in pts] == ["96x96", "128x128", "200x160"]
    assert point_side(pts[2]) == pytest.approx((200 * 160) ** 0.5)
    assert parse_sizes([64, (32, 48)], ["input"]) == [{"input": (64, 64)}, {"input": (32, 48)}]
    two = parse_sizes("template:128+search:256x320", ["template", "search"])
    assert two == [{"template": (128, 128), "search": (256, 320)}]
    assert point_label(two[0]) == "template:128x128+search:256x320"
    with pytest.raises(InputError, match=r"size 'abc' does not parse: expected SIDE or HxW"):
        parse_sizes("96,abc", ["input"])
    with pytest.raises(InputError, match=r"size '128': the model has 2 image inputs \(template, search\)"):
        parse_sizes("128", ["template", "search"])
    with pytest.raises(InputError, match="expected at least one size"):
        parse_sizes(" , ", ["input"])
