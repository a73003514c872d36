"""Train the example models on 2 CPU cores in a few minutes each, seeded, at many resolutions.

- ``vit`` and ``cnn``: digits (examples/data.py) upscaled to a random size per batch (multiples of 16
  in the spec's training range), with ResFormer's scale-consistency loss: each batch is also seen at a
  second, smaller size, whose prediction is pulled towards the larger size's (KL to the detached
  larger-size softmax) besides both cross-entropies.
- ``seg``: generated shapes scenes at a random H x W per batch (multiples of 16, non-square too),
  pixel cross-entropy.
- the paper families (examples/families): ``swin``, ``navit``, ``crossmax`` on digits exactly like
  ``vit``/``cnn`` (the same loop); ``restore`` (denoising: real photo crops from the calibration half
  of examples/real/photos.py plus Gaussian noise -> the clean crop) and ``sr`` (2x super-resolution: the
  crop downscaled by 2 with bicubic -> the crop), L1 loss, a random H x W per batch. Their metric is
  PSNR on crops of the evaluation half, next to the noisy input's / bicubic upscaling's PSNR.

Checkpoints: ``examples/checkpoints/<name>.pt`` (a plain ``state_dict``, float tensors stored as
float16 to keep the files small; ``load_state_dict`` casts them back), and ``<name>.json`` with the
FP32 accuracy (mIoU for seg) of the saved weights at sizes in and outside the training range.

    python -m examples.train vit cnn seg [--steps N] [--threads 2]
    python -m examples.train swin navit crossmax restore sr
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from examples import data
from examples.zoo import DIGIT_LABELS, ROOT, ExampleSpec
from examples.zoo import get_spec as _zoo_spec

# the paper families (examples/families/*.py): factory and training size range (multiples of 16)
FAMILY_SPECS = {
    "swin": ExampleSpec("swin", "examples/families/swin.py:swin_v2", (1, 3, 64, 64), labels=DIGIT_LABELS,
                        train_sizes=(32, 96)),
    "navit": ExampleSpec("navit", "examples/families/navit.py:navit", (1, 3, 64, 96), labels=DIGIT_LABELS,
                         train_sizes=(32, 96)),
    "crossmax": ExampleSpec("crossmax", "examples/families/crossmax.py:crossmax_ensemble", (1, 3, 64, 64),
                            labels=DIGIT_LABELS, train_sizes=(32, 96)),
    "restore": ExampleSpec("restore", "examples/families/restore.py:restoration_unet", (1, 3, 64, 64),
                           task="restoration", train_sizes=(32, 128)),
    "sr": ExampleSpec("sr", "examples/families/restore.py:super_resolution", (1, 3, 48, 48),
                      task="super-resolution", train_sizes=(32, 96)),  # input sizes; the target is 2x
    "lorat": ExampleSpec("lorat", "examples/families/lorat.py:lorat_tracker",
                         {"template": (1, 3, 64, 64), "search": (1, 3, 128, 128)}, task="tracking",
                         train_sizes=(128, 224)),  # search sizes; the template is 64x64
}
NOISE_SIGMA = 25 / 255  # restoration: Gaussian noise std on [0, 1] images


def get_spec(name: str) -> ExampleSpec:
    return FAMILY_SPECS[name] if name in FAMILY_SPECS else _zoo_spec(name)


def build_example(name: str, checkpoint: bool = True) -> torch.nn.Module:
    """The example model from its factory (with its saved checkpoint when ``checkpoint`` and present)."""
    import importlib

    spec = get_spec(name)
    file, _, fn = spec.factory.rpartition(":")
    module = importlib.import_module(".".join(Path(file).with_suffix("").parts))
    model = getattr(module, fn)(**spec.model_args)
    path = ROOT / spec.checkpoint
    if checkpoint and path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()

EVAL_SIZES = {
    "vit": [(32, 32), (40, 40), (48, 48), (64, 64), (72, 72), (96, 96), (128, 128), (96, 160), (160, 160),
            (192, 192), (224, 224), (256, 256)],
    "cnn": [(32, 32), (48, 48), (64, 64), (96, 96), (128, 128), (96, 160), (160, 160), (192, 192),
            (224, 224), (256, 256), (320, 320)],
    "seg": [(32, 32), (64, 64), (96, 96), (128, 128), (96, 160), (160, 160), (192, 192), (256, 256)],
    **{f: [(32, 32), (40, 40), (48, 48), (48, 64), (64, 64), (80, 80), (96, 96), (96, 128), (128, 128), (160, 160)]
       for f in ("swin", "navit", "crossmax")},
    "restore": [(32, 32), (48, 64), (45, 61), (64, 64), (80, 88), (96, 128), (128, 128), (160, 160)],
    "sr": [(24, 24), (40, 40), (48, 64), (51, 57), (64, 64), (80, 88), (96, 96), (128, 128)],  # input sizes
    "lorat": [(128, 128), (160, 160), (150, 171), (200, 200), (224, 224), (256, 256)],  # search sizes
}
DEFAULT_STEPS = {"vit": 500, "cnn": 300, "seg": 800, "swin": 300, "navit": 300, "crossmax": 300,
                 "restore": 300, "sr": 300, "lorat": 400}
TRAIN_SIZE_STEP = 16  # training sizes are multiples of 16: sizes like 40, 72 are never seen in training


def train_sizes(name: str, size_range: tuple[int, int] | None = None) -> list[int]:
    lo, hi = size_range or get_spec(name).train_sizes
    return list(range(lo, hi + 1, TRAIN_SIZE_STEP))


def _augment_digits(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift each 8x8 digit by up to one pixel (zero fill) and jitter its contrast."""
    out = np.zeros_like(images)
    for i, img in enumerate(images):
        dy, dx = rng.integers(-1, 2, size=2)
        padded = np.pad(img, 1)
        out[i] = padded[1 + dy: 9 + dy, 1 + dx: 9 + dx]
    return np.clip(out * rng.uniform(0.8, 1.2, size=(len(images), 1, 1)), 0, 1).astype(np.float32)


def _lr(step: int, steps: int, base: float, warmup: int = 30) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup)))


def _fit(name: str, steps: int, seed: int, finetune: bool, base_lr: float, weight_decay: float, step_fn,
         log=print) -> torch.nn.Module:
    """The training loop every example shares: seeded, AdamW with warmup + cosine LR, one batch per step.
    ``step_fn(model, step, rng) -> (loss, describe)`` draws a batch (a random size per batch), returns the
    loss and a callable that gives the step's log text (called every 50 steps and at the last)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_example(name, checkpoint=finetune).train()
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=weight_decay)
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, base_lr)
        loss, describe = step_fn(model, step, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"{name} step {step:4d}/{steps} {describe()} {time.perf_counter() - t0:.0f}s")
    return model.eval()


def train_classifier(name: str, steps: int, batch: int = 32, seed: int = 0, log=print, finetune: bool = False,
                     size_range: tuple[int, int] | None = None, lr_scale: float | None = None) -> torch.nn.Module:
    spec = get_spec(name)
    images, labels = data.digits("train")
    sizes = train_sizes(name, size_range)

    def step_fn(model, step, rng):
        idx = rng.choice(len(images), batch, replace=False)
        x8 = _augment_digits(images[idx], rng)
        y = torch.from_numpy(labels[idx])
        big, small = sorted(rng.choice(sizes, 2, replace=len(sizes) < 2), reverse=True)
        x_big = torch.from_numpy(data.digits_at(x8, int(big), spec.mean, spec.std))
        x_small = torch.from_numpy(data.digits_at(x8, int(small), spec.mean, spec.std))
        z_big, z_small = model(x_big), model(x_small)
        consistency = F.kl_div(F.log_softmax(z_small, -1), F.softmax(z_big.detach(), -1), reduction="batchmean")
        loss = F.cross_entropy(z_big, y) + F.cross_entropy(z_small, y) + consistency
        acc = lambda: (z_big.argmax(-1) == y).float().mean().item()  # noqa: E731
        return loss, lambda: (f"sizes {big}/{small} loss {loss.item():.3f} (consistency {consistency.item():.3f}) "
                              f"batch acc {acc():.2f}")

    base_lr = (1e-3 if name in ("vit", "swin", "navit") else 2e-3) * (lr_scale or (0.5 if finetune else 1.0))
    return _fit(name, steps, seed, finetune, base_lr, 0.05, step_fn, log)


def train_segmenter(name: str, steps: int, batch: int = 16, seed: int = 0, log=print, finetune: bool = False,
                    size_range: tuple[int, int] | None = None) -> torch.nn.Module:
    spec = get_spec(name)
    sizes = train_sizes(name, size_range)

    def step_fn(model, step, rng):
        h, w = (int(s) for s in rng.choice(sizes, 2))
        x, m = data.shapes_batch(batch, (h, w), seed=seed * 1_000_003 + step + (500_000 if finetune else 0),
                                 mean=spec.mean, std=spec.std)
        logits = model(torch.from_numpy(x))
        loss = F.cross_entropy(logits, torch.from_numpy(m))
        return loss, lambda: (f"size {h}x{w} loss {loss.item():.3f} "
                              f"batch mIoU {data.miou(logits.argmax(1).numpy(), m):.3f}")

    return _fit(name, steps, seed, finetune, 3e-3 * (0.5 if finetune else 1.0), 1e-4, step_fn, log)


def restoration_pair(name: str, n: int, size: tuple[int, int], split: str, seed: int,
                     mean=(0.5,) * 3, std=(0.5,) * 3) -> tuple[np.ndarray, np.ndarray]:
    """(input, target), normalized, (N, 3, ...) float32, from ``n`` real photo crops of ``split``:
    ``restore``: (crop at ``size`` + Gaussian noise, crop); ``sr``: (crop downscaled by 2 with bicubic to
    ``size``, crop at 2 x ``size``)."""
    from PIL import Image

    from examples.real.photos import crops

    h, w = size
    m, s = np.asarray(mean, np.float32).reshape(1, 3, 1, 1), np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    rng = np.random.default_rng([seed, 7])
    if name == "restore":
        clean = np.stack([np.asarray(Image.fromarray(c).resize((w, h), Image.BILINEAR), np.float32) / 255
                          for c in crops(split, n, seed)]).transpose(0, 3, 1, 2)
        noisy = clean + rng.normal(0, NOISE_SIGMA, clean.shape).astype(np.float32)
        return ((noisy - m) / s).astype(np.float32), ((clean - m) / s).astype(np.float32)
    hi = [Image.fromarray(c).resize((2 * w, 2 * h), Image.BICUBIC) for c in crops(split, n, seed)]
    lo = np.stack([np.asarray(im.resize((w, h), Image.BICUBIC), np.float32) / 255 for im in hi]).transpose(0, 3, 1, 2)
    hi = np.stack([np.asarray(im, np.float32) / 255 for im in hi]).transpose(0, 3, 1, 2)
    return ((lo - m) / s).astype(np.float32), ((hi - m) / s).astype(np.float32)


def baseline(name: str, x: np.ndarray, mean=(0.5,) * 3, std=(0.5,) * 3) -> np.ndarray:
    """What the model must beat: the noisy input itself (restore) or bicubic 2x upscaling (sr)."""
    if name == "restore":
        return x
    from PIL import Image

    m, s = np.asarray(mean, np.float32).reshape(1, 3, 1, 1), np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    u8 = (np.clip(x * s + m, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    h, w = x.shape[-2:]
    up = np.stack([np.asarray(Image.fromarray(im).resize((2 * w, 2 * h), Image.BICUBIC), np.float32) / 255 for im in u8])
    return ((up.transpose(0, 3, 1, 2) - m) / s).astype(np.float32)


def psnr(pred: np.ndarray, target: np.ndarray, mean=(0.5,) * 3, std=(0.5,) * 3) -> float:
    """PSNR (dB) on [0, 1] images (un-normalized, clipped), averaged over the batch."""
    m, s = np.asarray(mean, np.float32).reshape(1, 3, 1, 1), np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    p = np.clip(pred * s + m, 0, 1)
    t = np.clip(target * s + m, 0, 1)
    mse = ((p - t) ** 2).reshape(len(p), -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def tracking_batch(n: int, search: tuple[int, int], split: str, seed: int, template: int = 64,
                   distractors: int = 2, mean=(0.5,) * 3, std=(0.5,) * 3):
    """A template-matching task on digits: the search image (H x W) holds 1 + ``distractors`` digits of
    different classes (28-48 px, non-overlapping) on a dark noisy background; the template is the target
    digit (the same 8x8 image) at ``template`` px. Returns (template, search, boxes): boxes (N, 4) are
    the target's (cx, cy, w, h) as fractions of the search's width/height."""
    images, labels = data.digits(split)
    rng = np.random.default_rng([seed, 11])
    h, w = search
    xs = np.zeros((n, h, w), np.float32)
    zs = np.zeros((n, 8, 8), np.float32)
    boxes = np.zeros((n, 4), np.float32)
    for i in range(n):
        canvas = rng.uniform(0, 0.15) + rng.normal(0, 0.03, (h, w)).astype(np.float32)
        first = int(rng.integers(len(images)))
        picks = [first] + [int(k) for k in rng.permutation(len(images)) if labels[k] != labels[first]][:distractors]
        placed = []
        for k in picks:
            d = int(rng.integers(28, 49))
            for _ in range(30):
                y0, x0 = int(rng.integers(0, h - d + 1)), int(rng.integers(0, w - d + 1))
                if all(y0 + d <= py or py + pd <= y0 or x0 + d <= px or px + pd <= x0 for py, px, pd in placed):
                    break
            patch = data.resize_bilinear(images[k][None], (d, d))[0] * rng.uniform(0.7, 1.0)
            canvas[y0:y0 + d, x0:x0 + d] = np.maximum(canvas[y0:y0 + d, x0:x0 + d], patch)
            placed.append((y0, x0, d))
        y0, x0, d = placed[0]
        boxes[i] = ((x0 + d / 2) / w, (y0 + d / 2) / h, d / w, d / h)
        xs[i] = np.clip(canvas, 0, 1)
        zs[i] = images[first]
    z = data.digits_at(zs, template, mean, std)
    x = data.normalize(np.repeat(xs[:, None], 3, axis=1), mean, std)
    return z, x, boxes


def tracking_targets(boxes: np.ndarray, grid: tuple[int, int], search: tuple[int, int]) -> np.ndarray:
    """The flat index of the stride-16 score cell holding each box's center."""
    gh, gw = grid
    cy = np.minimum((boxes[:, 1] * search[0] // 16).astype(int), gh - 1)
    cx = np.minimum((boxes[:, 0] * search[1] // 16).astype(int), gw - 1)
    return cy * gw + cx


def tracking_metrics(score: np.ndarray, box: np.ndarray, boxes: np.ndarray, search: tuple[int, int]) -> dict:
    """hit: the top-scoring cell's center lies inside the target box; IoU of the box predicted there."""
    n, _, gh, gw = score.shape
    cell = score.reshape(n, -1).argmax(1)
    cy, cx = (cell // gw + 0.5) * 16 / search[0], (cell % gw + 0.5) * 16 / search[1]
    hit = (np.abs(cx - boxes[:, 0]) <= boxes[:, 2] / 2) & (np.abs(cy - boxes[:, 1]) <= boxes[:, 3] / 2)
    pb = box.reshape(n, 4, -1)[np.arange(n), :, cell]

    def corners(b):
        return b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2

    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = corners(pb), corners(boxes)
    inter = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None) * np.clip(
        np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    union = pb[:, 2] * pb[:, 3] + boxes[:, 2] * boxes[:, 3] - inter
    return {"hit": float(hit.mean()), "iou": float((inter / np.maximum(union, 1e-9)).mean()), "cell": cell}


def train_tracker(name: str, steps: int, batch: int = 32, seed: int = 0, log=print, finetune: bool = False,
                  size_range: tuple[int, int] | None = None) -> torch.nn.Module:
    """``lorat``: find the template's digit in the search image; cross-entropy over the score map's cells
    (the cell holding the target's center) plus L1 on the box predicted at that cell."""
    sizes = train_sizes(name, size_range)

    def step_fn(model, step, rng):
        h, w = (int(s) for s in rng.choice(sizes, 2))
        z, x, boxes = tracking_batch(batch, (h, w), "train", seed=seed * 1_000_003 + step + 1)
        score, box = model(torch.from_numpy(z), torch.from_numpy(x))
        target = torch.from_numpy(tracking_targets(boxes, score.shape[-2:], (h, w)))
        pred_box = box.flatten(2)[torch.arange(batch), :, target]
        loss = F.cross_entropy(score.flatten(1), target) + 5 * F.l1_loss(pred_box, torch.from_numpy(boxes))

        def describe():
            m = tracking_metrics(score.detach().numpy(), box.detach().numpy(), boxes, (h, w))
            return f"search {h}x{w} loss {loss.item():.3f} batch hit {m['hit']:.2f} IoU {m['iou']:.2f}"

        return loss, describe

    return _fit(name, steps, seed, finetune, 1e-3 * (0.5 if finetune else 1.0), 0.05, step_fn, log)


def train_restoration(name: str, steps: int, batch: int = 16, seed: int = 0, log=print, finetune: bool = False,
                      size_range: tuple[int, int] | None = None) -> torch.nn.Module:
    """``restore`` / ``sr`` on real photo crops of the calibration half (L1 loss, a random H x W per batch)."""
    sizes = train_sizes(name, size_range)

    def step_fn(model, step, rng):
        h, w = (int(s) for s in rng.choice(sizes, 2))
        x, y = restoration_pair(name, batch, (h, w), "calib", seed=seed * 1_000_003 + step + 1)
        out = model(torch.from_numpy(x))
        loss = F.l1_loss(out, torch.from_numpy(y))
        return loss, lambda: (f"size {h}x{w} loss {loss.item():.4f} batch PSNR {psnr(out.detach().numpy(), y):.2f} "
                              f"(input {psnr(baseline(name, x), y):.2f})")

    return _fit(name, steps, seed, finetune, 2e-3 * (0.5 if finetune else 1.0), 1e-4, step_fn, log)


@torch.no_grad()
def evaluate(name: str, model: torch.nn.Module, sizes=None, n_seg: int = 48) -> dict[str, float]:
    """FP32 accuracy (classifiers: held-out digits), mIoU (seg: held-out scenes) or PSNR (restore, sr: 32
    crops of the photos' evaluation half, with the noisy input's / bicubic's PSNR) per 'HxW' input size."""
    spec = get_spec(name)
    sizes = sizes or EVAL_SIZES[name]
    out = {}
    for h, w in sizes:
        if spec.task == "tracking":
            z, x, boxes = tracking_batch(len(data.digits("heldout")[0]), (h, w), "heldout", seed=HELDOUT_PHOTO_SEED)
            score, box = model(torch.from_numpy(z), torch.from_numpy(x))
            m = tracking_metrics(score.numpy(), box.numpy(), boxes, (h, w))
            out[f"{h}x{w}"] = {"hit": round(m["hit"], 4), "iou": round(m["iou"], 4)}
        elif spec.task in ("restoration", "super-resolution"):
            x, y = restoration_pair(name, 32, (h, w), "eval", seed=HELDOUT_PHOTO_SEED)
            out[f"{h}x{w}"] = {"psnr": round(psnr(model(torch.from_numpy(x)).numpy(), y), 3),
                               "baseline": round(psnr(baseline(name, x), y), 3)}
        elif spec.task == "segmentation":
            x, m = data.shapes_batch(n_seg, (h, w), seed=data.HELDOUT_SHAPES_SEED, mean=spec.mean, std=spec.std)
            pred = torch.cat([model(torch.from_numpy(x[i:i + 16])) for i in range(0, n_seg, 16)]).argmax(1)
            out[f"{h}x{w}"] = data.miou(pred.numpy(), m)
        else:
            x, y = data.digits_batch((h, w), "heldout", mean=spec.mean, std=spec.std)
            pred = torch.cat([model(torch.from_numpy(x[i:i + 120])) for i in range(0, len(x), 120)]).argmax(-1)
            out[f"{h}x{w}"] = float((pred.numpy() == y).mean())
    return out


HELDOUT_PHOTO_SEED = 1234
DATA = {
    **{f: "scikit-learn digits (train split, 80%), upscaled to a random size per batch; metric on the held-out 20%"
       for f in ("swin", "navit", "crossmax")},
    "restore": f"scikit-image / scikit-learn photo crops (calibration half) + Gaussian noise sigma {NOISE_SIGMA:.4f} "
               "on [0, 1]; metric on 32 crops of the evaluation half",
    "sr": "scikit-image / scikit-learn photo crops (calibration half) downscaled 2x with bicubic; "
          "metric on 32 crops of the evaluation half",
    "lorat": "template matching on digits: the train split's digits, 3 of different classes (28-48 px) per search "
             "image, the template is the target digit at 64x64; metric on held-out digits (359 search images)",
}  # evaluation crops (the photos' evaluation half)


def save_checkpoint(name: str, model: torch.nn.Module) -> Path:
    path = ROOT / get_spec(name).checkpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def _previous_report(name: str) -> dict | None:
    path = (ROOT / get_spec(name).checkpoint).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=["vit", "cnn", "seg"])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default per model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--finetune", action="store_true", help="continue from the saved checkpoint")
    parser.add_argument("--lr-scale", type=float, default=None, help="scale the base learning rate (classifiers)")
    parser.add_argument("--sizes", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                        help="training size range (default: the example's train_sizes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.names:
        steps = args.steps or DEFAULT_STEPS[name]
        t0 = time.perf_counter()
        kw = dict(seed=args.seed, finetune=args.finetune, size_range=tuple(args.sizes) if args.sizes else None)
        if args.batch:
            kw["batch"] = args.batch
        if args.lr_scale:
            kw["lr_scale"] = args.lr_scale
        previous = _previous_report(name) if args.finetune else None
        task = get_spec(name).task
        if task == "segmentation":
            model = train_segmenter(name, steps, **kw)
        elif task in ("restoration", "super-resolution"):
            kw.pop("lr_scale", None)
            model = train_restoration(name, steps, **kw)
        elif task == "tracking":
            kw.pop("lr_scale", None)
            model = train_tracker(name, steps, **kw)
        else:
            model = train_classifier(name, steps, **kw)
        seconds = time.perf_counter() - t0
        path = save_checkpoint(name, model)
        model = build_example(name)  # evaluate what was saved (float16-rounded weights)
        metrics = evaluate(name, model)
        trained = train_sizes(name, kw["size_range"])
        stages = (previous or {}).get("stages") or ([{
            "steps": previous["steps"], "sizes": [min(previous["train_sizes"]), max(previous["train_sizes"])],
            "finetune": False, "batch": None, "seconds": previous["train_seconds"]}] if previous else [])
        stages = stages + [{"steps": steps, "sizes": [trained[0], trained[-1]], "finetune": args.finetune,
                            "batch": args.batch, "seconds": round(seconds, 1)}]
        trained = sorted(set(trained) | {s for st in stages for s in train_sizes(name, tuple(st["sizes"]))})
        report = {
            "name": name,
            "metric": {"segmentation": "mIoU", "restoration": "PSNR dB (baseline: the noisy input)",
                       "super-resolution": "PSNR dB at 2x (baseline: bicubic)",
                       "tracking": "hit (top cell inside the target box) and IoU, per search size (template 64x64)"
                       }.get(task, "top-1"),
            "data": DATA[name] if name in DATA else None,
            "steps": sum(st["steps"] for st in stages),
            "stages": stages,
            "seed": args.seed,
            "train_seconds": round(sum(st["seconds"] for st in stages), 1),
            "train_sizes": trained,
            "fp32": metrics,
            "never_trained": [s for s in metrics if not (int(s.split("x")[0]) in trained
                                                          and int(s.split("x")[1]) in trained)],
        }
        path.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"{name}: saved {path} ({path.stat().st_size / 1e6:.2f} MB) in {seconds:.0f}s")
        for size, value in metrics.items():
            mark = " (never trained)" if size in report["never_trained"] else ""
            shown = (f"{value['psnr']:.2f} (baseline {value['baseline']:.2f})" if isinstance(value, dict)
                     and "psnr" in value else str(value) if isinstance(value, dict) else f"{value:.4f}")
            print(f"  {size:>9}: {report['metric']} {shown}{mark}")


if __name__ == "__main__":
    main()
