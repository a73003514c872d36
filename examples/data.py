"""Offline datasets for the example models: digits at any resolution, and generated shapes for segmentation.

- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), upscaled with bilinear
  interpolation to any H x W, three channels, normalized with the model's mean/std. A fixed, seeded
  split: 80% train, 20% held out (never used for training or calibration).
- ``shapes``: generated segmentation scenes of any H x W: discs, rectangles and triangles on textured
  backgrounds; the class of a pixel is the kind of shape covering it (0 background).
- ``write_image_folder``: a folder of PNG images of varied sizes (``--calib-data DIR``, ``profiles plan``).

numpy only (Pillow for writing PNGs), so calibration can use it without torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mrdeploy.runtime.resize import resize_bilinear as _resize

DIGIT_CLASSES = [str(i) for i in range(10)]
SHAPE_CLASSES = ["background", "disc", "rectangle", "triangle"]
SPLIT_SEED = 20240531
HELDOUT_FRACTION = 0.2


# ----------------------------------------------------------------------------------------------------
# resizing and normalization


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of ``x`` to ``size`` (H, W) with bilinear interpolation (half-pixel
    centers, like torch's align_corners=False): the runtime's own resize, as float32."""
    return _resize(np.asarray(x, dtype=np.float32), size)


def normalize(x: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """``x`` in [0, 1], (N, C, H, W) -> (x - mean) / std per channel."""
    x = x.astype(np.float32)
    if mean is not None:
        x = x - np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    if std is not None:
        x = x / np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return x


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


# ----------------------------------------------------------------------------------------------------
# digits


def digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8) float32 in [0, 1], labels (N,) int64) of the fixed ``train`` / ``heldout`` split."""
    from sklearn.datasets import load_digits

    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    labels = d.target.astype(np.int64)
    if split == "all":
        return images, labels
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_held = int(round(len(labels) * HELDOUT_FRACTION))
    idx = order[:n_held] if split == "heldout" else order[n_held:]
    return images[idx], labels[idx]


def digits_at(
    images: np.ndarray,
    size: int | Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """8x8 digit images (N, 8, 8) in [0, 1] -> (N, 3, H, W) float32, upscaled and normalized."""
    x = resize_bilinear(images[:, None], _size(size))
    x = np.repeat(x, 3, axis=1)
    return normalize(x, mean, std)


def digits_batch(
    size: int | Sequence[int],
    split: str = "heldout",
    n: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 3, H, W), labels) of the first ``n`` digits of ``split`` at ``size``."""
    images, labels = digits(split)
    if n is not None:
        images, labels = images[:n], labels[:n]
    return digits_at(images, size, mean, std), labels


# ----------------------------------------------------------------------------------------------------
# shapes


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured background (3, H, W) in [0, 1]: two sinusoidal gratings, a color gradient and noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0.15, 0.6, size=(3, 1, 1)).astype(np.float32)
    tex = np.zeros((3, h, w), dtype=np.float32)
    for _ in range(2):
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 24) * max(h, w) / 96
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + phase)
        tex += rng.uniform(0.03, 0.1, size=(3, 1, 1)).astype(np.float32) * wave
    grad = (yy / max(h - 1, 1) - 0.5) * rng.uniform(-0.2, 0.2)
    noise = rng.normal(0, 0.03, size=(3, h, w)).astype(np.float32)
    return np.clip(base + tex + grad + noise, 0, 1)


def _triangle_mask(yy, xx, pts) -> np.ndarray:
    (x0, y0), (x1, y1), (x2, y2) = pts

    def edge(ax, ay, bx, by):
        return (xx - ax) * (by - ay) - (yy - ay) * (bx - ax)

    e0, e1, e2 = edge(x0, y0, x1, y1), edge(x1, y1, x2, y2), edge(x2, y2, x0, y0)
    return ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))


def shapes_scene(h: int, w: int, rng: np.random.Generator, max_shapes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (image (3, H, W) float32 in [0, 1], mask (H, W) int64 with SHAPE_CLASSES indices)."""
    image = _texture(rng, h, w)
    mask = np.zeros((h, w), dtype=np.int64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    side = min(h, w)
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        kind = int(rng.integers(1, 4))
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        r = rng.uniform(0.08, 0.22) * side
        if kind == 1:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif kind == 2:
            rh, rw = r * rng.uniform(0.6, 1.3), r * rng.uniform(0.6, 1.3)
            m = (np.abs(yy - cy) <= rh) & (np.abs(xx - cx) <= rw)
        else:
            a0 = rng.uniform(0, 2 * np.pi)
            pts = [(cx + r * 1.3 * np.cos(a0 + k * 2 * np.pi / 3), cy + r * 1.3 * np.sin(a0 + k * 2 * np.pi / 3))
                   for k in range(3)]
            m = _triangle_mask(yy, xx, pts)
        color = rng.uniform(0, 1, size=3).astype(np.float32)
        shade = 1 + 0.15 * np.sin(xx / max(r, 1) * 2)  # mild texture on the shape too
        image[:, m] = np.clip(color[:, None] * shade[m][None], 0, 1)
        mask[m] = kind
    return image, mask


def shapes_batch(
    n: int,
    size: int | Sequence[int],
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 3, H, W) normalized, masks (N, H, W)) of ``n`` seeded scenes at ``size``."""
    h, w = _size(size)
    rng = np.random.default_rng(seed)
    images, masks = zip(*(shapes_scene(h, w, rng) for _ in range(n)))
    return normalize(np.stack(images), mean, std), np.stack(masks)


HELDOUT_SHAPES_SEED = 777_000  # held-out shapes scenes use seeds from here; training uses seeds below


def miou(pred: np.ndarray, target: np.ndarray, num_classes: int = len(SHAPE_CLASSES)) -> float:
    """Mean intersection over union over the classes present in prediction or target."""
    ious = []
    for c in range(num_classes):
        p, t = pred == c, target == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(ious)) if ious else 1.0


# ----------------------------------------------------------------------------------------------------
# image folders


def iter_images(kind: str, n: int, sizes: Sequence[tuple[int, int]], seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` uint8 RGB images (H, W, 3) of ``kind`` ("digits" | "shapes"), sizes cycled from ``sizes``."""
    rng = np.random.default_rng(seed)
    if kind == "digits":
        images, _ = digits("train")
        pick = rng.permutation(len(images))
    elif kind != "shapes":
        raise ValueError(f"kind must be 'digits' or 'shapes', got {kind!r}")
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        if kind == "digits":
            x = digits_at(images[pick[i % len(pick)]][None], (h, w))[0]
        else:
            x, _ = shapes_scene(h, w, rng)
        yield (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)


def write_image_folder(
    directory: str | Path,
    n: int = 32,
    sizes: Sequence[int | tuple[int, int]] = ((96, 96), (128, 128), (160, 160), (120, 200), (224, 224)),
    kind: str = "digits",
    seed: int = 0,
) -> list[Path]:
    """Write ``n`` PNG images of varied sizes into ``directory`` (nested in two subfolders); return the paths."""
    from PIL import Image

    directory = Path(directory)
    hw = [_size(s) for s in sizes]
    paths = []
    for i, img in enumerate(iter_images(kind, n, hw, seed)):
        sub = directory / ("a" if i % 2 == 0 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{kind}_{i:04d}_{img.shape[0]}x{img.shape[1]}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths
