"""Reading model outputs: top-k classes with labels, segmentation masks. numpy only."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def topk(logits: np.ndarray, k: int = 5, labels: list[str] | None = None) -> list[tuple[int, str, float]]:
    """One row of class logits -> [(class index, label, probability)] best first."""
    row = np.asarray(logits, dtype=np.float64).reshape(-1)
    probs = softmax(row)
    k = max(1, min(int(k), row.size))
    order = np.argsort(-probs, kind="stable")[:k]

    def name(i: int) -> str:
        return labels[i] if labels and i < len(labels) else f"class {i}"

    return [(int(i), name(int(i)), float(probs[i])) for i in order]


def mask_from_logits(logits: np.ndarray) -> np.ndarray:
    """[C, H, W] (or [1, C, H, W]) class logits -> HxW class indices (uint8 when < 256 classes)."""
    a = np.asarray(logits)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"expected [C, H, W] logits, got shape {a.shape}")
    m = a.argmax(axis=0)
    return m.astype(np.uint8 if a.shape[0] <= 256 else np.int32)


def class_fractions(mask: np.ndarray, labels: list[str] | None = None) -> list[tuple[str, float]]:
    """Share of pixels per class present in a mask, largest first."""
    values, counts = np.unique(mask, return_counts=True)
    total = float(mask.size)
    items = [
        (labels[v] if labels and v < len(labels) else f"class {v}", c / total)
        for v, c in zip(values.tolist(), counts.tolist())
    ]
    return sorted(items, key=lambda t: -t[1])
