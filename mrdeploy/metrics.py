"""Agreement and accuracy metrics between two models' outputs (numpy only).

Used by ``mrdeploy.parity``: a candidate output (a bundle profile, the ONNX model) is compared with a
reference output (the source ONNX model, the PyTorch model) computed on the same inputs.

- classification outputs are ``(N, classes)`` logits; segmentation outputs ``(N, classes, H, W)``.
- cosine is computed per sample on the flattened output, then averaged (a sample's cosine is 1.0 when
  both outputs are all zeros, 0.0 when only one is).
"""

from __future__ import annotations

import numpy as np


def max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference between two arrays of the same shape."""
    _same_shape(a, b)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    _same_shape(a, b)
    if a.size == 0:
        return 0.0
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the batch (first axis) of the cosine similarity of each sample's flattened output."""
    _same_shape(a, b)
    if a.ndim == 0:
        a, b = a.reshape(1, 1), b.reshape(1, 1)
    x = a.reshape(a.shape[0], -1).astype(np.float64)
    y = b.reshape(b.shape[0], -1).astype(np.float64)
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    dot = np.sum(x * y, axis=1)
    both_zero = (nx == 0) & (ny == 0)
    denom = np.where(nx * ny == 0, 1.0, nx * ny)
    cos = np.where(both_zero, 1.0, np.where(nx * ny == 0, 0.0, dot / denom))
    return float(np.mean(np.clip(cos, -1.0, 1.0)))


def compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max abs error, cosine similarity) of two arrays taken whole (flattened, same size): the check
    of an exported or specialized model against its source."""
    a = np.asarray(ref).reshape(1, -1)
    b = np.asarray(got).reshape(1, -1)
    return max_abs_error(a, b), cosine(a, b)


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples whose argmax over the last axis (classes) is the same in ``a`` and ``b``."""
    _same_shape(a, b)
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose argmax equals the label."""
    labels = np.asarray(labels).reshape(-1)
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected {logits.shape[0]} labels, got {labels.shape[0]}")
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def class_map(logits: np.ndarray) -> np.ndarray:
    """(N, C, H, W) segmentation logits -> (N, H, W) class indices."""
    if logits.ndim != 4:
        raise ValueError(f"expected segmentation logits (N, C, H, W), got shape {tuple(logits.shape)}")
    return np.argmax(logits, axis=1)


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose class (argmax over axis 1) is the same in two (N, C, H, W) outputs."""
    _same_shape(a, b)
    return float(np.mean(class_map(a) == class_map(b)))


def miou(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean IoU between class maps (any shape), over the classes present in ``pred`` or ``target``.

    Computed over the whole batch at once (intersections and unions summed over all pixels), as
    segmentation benchmarks do; 1.0 when no class is present in either (cannot happen with class maps).
    """
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"class maps differ in size: {pred.shape[0]} vs {target.shape[0]} pixels")
    k = num_classes
    valid = (target >= 0) & (target < k) & (pred >= 0) & (pred < k)
    conf = np.bincount(k * target[valid] + pred[valid], minlength=k * k).reshape(k, k)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    present = union > 0
    return float(np.mean(inter[present] / union[present])) if present.any() else 1.0


def miou_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """mIoU of ``a``'s class map taking ``b``'s class map as ground truth, for (N, C, H, W) outputs."""
    _same_shape(a, b)
    return miou(class_map(a), class_map(b), a.shape[1])


def resize_nearest(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes (to compare outputs served at another size)."""
    h, w = size
    ih, iw = x.shape[-2:]
    if (ih, iw) == (h, w):
        return x
    rows = np.minimum(((np.arange(h) + 0.5) * ih / h).astype(int), ih - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * iw / w).astype(int), iw - 1)
    return x[..., rows[:, None], cols[None, :]]


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"outputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
