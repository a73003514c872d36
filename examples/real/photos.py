"""Real photos for calibration and evaluation: scikit-image's and scikit-learn's bundled images (no
download), cropped at varied sizes and aspect ratios.

Every photo is split down the middle: ``split="calib"`` crops come from the left half, ``"eval"`` crops
from the right half, so a calibration crop and an evaluation crop never share a pixel.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

COLOR = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")
GRAY = ("brick", "camera", "clock", "coins", "grass", "gravel", "moon")
SPLITS = ("calib", "eval")


@lru_cache(maxsize=1)
def photos() -> tuple[tuple[str, np.ndarray], ...]:
    """(name, HxWx3 uint8) for every bundled photo."""
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = [(n, getattr(skimage.data, n)()) for n in COLOR]
    out += [(n, np.repeat(getattr(skimage.data, n)()[..., None], 3, axis=2)) for n in GRAY]
    for path in load_sample_images().filenames:
        out.append((Path(path).stem, np.asarray(Image.open(path).convert("RGB"))))
    return tuple((n, np.ascontiguousarray(a[..., :3])) for n, a in out)


def crops(split: str, n: int, seed: int = 0, min_frac: float = 0.35) -> list[np.ndarray]:
    """``n`` HxWx3 uint8 crops of ``split``'s half of the photos, round-robin over photos, each with a
    random side (``min_frac``..1 of the half's shorter side) and aspect (0.6..1.6)."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    pics = photos()
    out = []
    for k in range(n):
        _, img = pics[k % len(pics)]
        h, w = img.shape[:2]
        half = img[:, : w // 2] if split == "calib" else img[:, w - w // 2:]
        hh, ww = half.shape[:2]
        side = rng.uniform(min_frac, 1.0) * min(hh, ww)
        aspect = rng.uniform(0.6, 1.6)
        ch = int(min(hh, max(16, round(side * np.sqrt(aspect)))))
        cw = int(min(ww, max(16, round(side / np.sqrt(aspect)))))
        y = int(rng.integers(0, hh - ch + 1))
        x = int(rng.integers(0, ww - cw + 1))
        out.append(np.ascontiguousarray(half[y:y + ch, x:x + cw]))
    return out


def write_folder(folder: str | Path, split: str, n: int, seed: int = 0) -> Path:
    """Write ``n`` crops as PNG files into ``folder`` (created); returns it."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, c in enumerate(crops(split, n, seed)):
        Image.fromarray(c).save(folder / f"{split}_{k:03d}_{c.shape[0]}x{c.shape[1]}.png")
    return folder


def batch(split: str, n: int, size: tuple[int, int], mean, std, seed: int = 0) -> np.ndarray:
    """(n, 3, H, W) float32 crops resized to ``size`` (bilinear) and normalized."""
    from PIL import Image

    h, w = size
    xs = [np.asarray(Image.fromarray(c).resize((w, h), Image.BILINEAR), np.float32) / 255.0
          for c in crops(split, n, seed)]
    x = np.stack(xs).transpose(0, 3, 1, 2)
    return ((x - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(std, np.float32).reshape(1, 3, 1, 1)
            ).astype(np.float32)
