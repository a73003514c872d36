"""Train the example models on 2 CPU cores in a few minutes each, seeded, at many resolutions.

- ``vit`` and ``cnn``: digits (examples/data.py) upscaled to a random size per batch (multiples of 16
  in the spec's training range), with ResFormer's scale-consistency loss: each batch is also seen at a
  second, smaller size, whose prediction is pulled towards the larger size's (KL to the detached
  larger-size softmax) besides both cross-entropies.
- ``seg``: generated shapes scenes at a random H x W per batch (multiples of 16, non-square too),
  pixel cross-entropy.

Checkpoints: ``examples/checkpoints/<name>.pt`` (a plain ``state_dict``, float tensors stored as
float16 to keep the files small; ``load_state_dict`` casts them back), and ``<name>.json`` with the
FP32 accuracy (mIoU for seg) of the saved weights at sizes in and outside the training range.

    python -m examples.train vit cnn seg [--steps N] [--threads 2]
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
from examples.zoo import ROOT, get_spec


def build_example(name: str, checkpoint: bool = True) -> torch.nn.Module:
    """The example model from its factory (with its saved checkpoint when ``checkpoint`` and present)."""
    import importlib

    spec = get_spec(name)
    file, _, fn = spec.factory.rpartition(":")
    module = importlib.import_module("examples." + Path(file).stem)
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
}
DEFAULT_STEPS = {"vit": 500, "cnn": 300, "seg": 800}
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


def train_classifier(name: str, steps: int, batch: int = 32, seed: int = 0, log=print, finetune: bool = False,
                     size_range: tuple[int, int] | None = None, lr_scale: float | None = None) -> torch.nn.Module:
    spec = get_spec(name)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_example(name, checkpoint=finetune).train()
    base_lr = (1e-3 if name == "vit" else 2e-3) * (lr_scale or (0.5 if finetune else 1.0))
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=0.05)
    images, labels = data.digits("train")
    sizes = train_sizes(name, size_range)
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, base_lr)
        idx = rng.choice(len(images), batch, replace=False)
        x8 = _augment_digits(images[idx], rng)
        y = torch.from_numpy(labels[idx])
        big, small = sorted(rng.choice(sizes, 2, replace=len(sizes) < 2), reverse=True)
        x_big = torch.from_numpy(data.digits_at(x8, int(big), spec.mean, spec.std))
        x_small = torch.from_numpy(data.digits_at(x8, int(small), spec.mean, spec.std))
        z_big, z_small = model(x_big), model(x_small)
        consistency = F.kl_div(F.log_softmax(z_small, -1), F.softmax(z_big.detach(), -1), reduction="batchmean")
        loss = F.cross_entropy(z_big, y) + F.cross_entropy(z_small, y) + consistency
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            acc = (z_big.argmax(-1) == y).float().mean().item()
            log(f"{name} step {step:4d}/{steps} sizes {big}/{small} loss {loss.item():.3f} "
                f"(consistency {consistency.item():.3f}) batch acc {acc:.2f} {time.perf_counter() - t0:.0f}s")
    return model.eval()


def train_segmenter(name: str, steps: int, batch: int = 16, seed: int = 0, log=print, finetune: bool = False,
                    size_range: tuple[int, int] | None = None) -> torch.nn.Module:
    spec = get_spec(name)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_example(name, checkpoint=finetune).train()
    base_lr = 3e-3 * (0.5 if finetune else 1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=1e-4)
    sizes = train_sizes(name, size_range)
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, base_lr)
        h, w = (int(s) for s in rng.choice(sizes, 2))
        x, m = data.shapes_batch(batch, (h, w), seed=seed * 1_000_003 + step + (500_000 if finetune else 0),
                                 mean=spec.mean, std=spec.std)
        logits = model(torch.from_numpy(x))
        loss = F.cross_entropy(logits, torch.from_numpy(m))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            miou = data.miou(logits.argmax(1).numpy(), m)
            log(f"{name} step {step:4d}/{steps} size {h}x{w} loss {loss.item():.3f} batch mIoU {miou:.3f} "
                f"{time.perf_counter() - t0:.0f}s")
    return model.eval()


@torch.no_grad()
def evaluate(name: str, model: torch.nn.Module, sizes=None, n_seg: int = 48) -> dict[str, float]:
    """FP32 accuracy (classifiers: held-out digits) or mIoU (seg: held-out scenes) per 'HxW' size."""
    spec = get_spec(name)
    sizes = sizes or EVAL_SIZES[name]
    out = {}
    for h, w in sizes:
        if spec.task == "segmentation":
            x, m = data.shapes_batch(n_seg, (h, w), seed=data.HELDOUT_SHAPES_SEED, mean=spec.mean, std=spec.std)
            pred = torch.cat([model(torch.from_numpy(x[i:i + 16])) for i in range(0, n_seg, 16)]).argmax(1)
            out[f"{h}x{w}"] = data.miou(pred.numpy(), m)
        else:
            x, y = data.digits_batch((h, w), "heldout", mean=spec.mean, std=spec.std)
            pred = torch.cat([model(torch.from_numpy(x[i:i + 120])) for i in range(0, len(x), 120)]).argmax(-1)
            out[f"{h}x{w}"] = float((pred.numpy() == y).mean())
    return out


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
        if get_spec(name).task == "segmentation":
            model = train_segmenter(name, steps, **kw)
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
            "metric": "mIoU" if get_spec(name).task == "segmentation" else "top-1",
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
            print(f"  {size:>9}: {report['metric']} {value:.4f}{mark}")


if __name__ == "__main__":
    main()
