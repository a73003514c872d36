"""INT8 per resolution profile vs FP32 and vs one calibration at a single size, side by side in one run.

For each example model (trained checkpoints from examples/checkpoints):

1. accuracy on held-out data (digits top-1 for vit/cnn, shapes mIoU for seg) at each profile's sizes
   (min/opt/max, several never used in training): FP32, INT8 calibrated per profile (at that profile's
   sizes), and INT8 calibrated ONCE at a single size (the middle profile's opt, as TensorRT's implicit
   calibration or MMDeploy would) and used everywhere;
2. latency per profile at its opt shape: FP32 vs the per-profile INT8 model, runs alternating, median.

    python benchmarks/bench_int8.py [--models vit cnn seg] [--samples 32] [--method entropy] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import data  # noqa: E402
from examples.zoo import export_example, get_spec  # noqa: E402
from mrdeploy.calibration import calibrate  # noqa: E402
from mrdeploy.calibration.evaluate import latency, session  # noqa: E402

PROFILES = {
    "vit": ["small=32-64@48", "mid=64-128@96", "large=128-256@192"],
    "cnn": ["small=32-64@48", "mid=64-128@96", "large=128-256@224", "xl=256-384@320"],
    "seg": ["small=32-64@48", "mid=64-128@96", "large=128-256@192"],
}
SINGLE_SIZE = 96  # the one-calibration baseline (the middle profile's opt); --single-size changes it


def trained_sizes(name: str) -> set[int]:
    """Sides the checkpoint was trained at (from examples/checkpoints/<name>.json)."""
    report = json.loads((ROOT / get_spec(name).checkpoint).with_suffix(".json").read_text())
    return set(report["train_sizes"])


def eval_sizes(profile_text: str, divisor: int) -> list[int]:
    body = profile_text.split("=", 1)[1]
    rng, _, opt = body.partition("@")
    lo, hi = (int(v) for v in rng.split("-"))
    mid = (lo + int(opt)) // 2 // divisor * divisor
    return sorted({lo, mid, int(opt), hi})


def accuracy(model_path: Path, name: str, size: int, n: int, threads: int) -> float:
    spec = get_spec(name)
    sess = session(model_path, threads)
    out = sess.get_outputs()[0].name
    if spec.task == "segmentation":
        x, m = data.shapes_batch(n, size, seed=data.HELDOUT_SHAPES_SEED, mean=spec.mean, std=spec.std)
        pred = np.concatenate([sess.run([out], {"input": x[i:i + 8]})[0] for i in range(0, n, 8)]).argmax(1)
        return data.miou(pred, m)
    x, y = data.digits_batch(size, "heldout", n=n, mean=spec.mean, std=spec.std)
    pred = np.concatenate([sess.run([out], {"input": x[i:i + 32]})[0] for i in range(0, len(x), 32)]).argmax(1)
    return float((pred == y).mean())


def bench_model(name: str, work: Path, args) -> dict:
    spec = get_spec(name)
    t0 = time.perf_counter()
    model = export_example(name, work / f"{name}.onnx")
    kind = "shapes" if spec.task == "segmentation" else "digits"
    calib_dir = work / f"{name}_calib"
    data.write_image_folder(calib_dir, n=args.samples + 32, kind=kind, seed=11,
                            sizes=[(48, 48), (64, 64), (96, 96), (128, 128), (160, 160), (224, 224), (96, 160)])
    per_profile = calibrate(model, PROFILES[name], calib_dir, output_dir=work / f"{name}_int8",
                            method=args.method, samples=args.samples, seed=0, threads=args.threads, quiet=True)
    single = calibrate(model, [f"single={args.single_size}"], calib_dir, output_dir=work / f"{name}_single",
                       method=args.method, samples=args.samples, seed=0, threads=args.threads, quiet=True)
    single_path = single.profiles[0].qdq_path
    n = args.heldout_seg if spec.task == "segmentation" else args.heldout
    rows, speed = [], []
    trained = trained_sizes(name)
    div = spec.divisor if isinstance(spec.divisor, int) else 1
    for prof_text, prof in zip(PROFILES[name], per_profile.profiles):
        for size in eval_sizes(prof_text, div):
            fp32 = accuracy(model, name, size, n, args.threads)
            int8 = accuracy(prof.qdq_path, name, size, n, args.threads)
            one = accuracy(single_path, name, size, n, args.threads)
            rows.append({"profile": prof.profile.name, "size": size, "never_trained": size not in trained,
                         "fp32": fp32, "int8_per_profile": int8, "int8_single_size": one})
        r = prof.profile.inputs["input"].opt
        feed = {"input": np.random.default_rng(0).standard_normal(r).astype(np.float32)}
        m = latency(model, prof.qdq_path, feed, runs=args.runs, threads=args.threads)
        speed.append({"profile": prof.profile.name, "opt": f"{r[-2]}x{r[-1]}", **m})
    return {"model": name, "metric": "mIoU" if spec.task == "segmentation" else "top-1", "heldout": n,
            "single_size": args.single_size,
            "method": args.method, "samples": args.samples, "accuracy": rows, "latency": speed,
            "float_nodes": {p.profile.name: len(p.rule_float_nodes) for p in per_profile.profiles},
            "seconds": round(time.perf_counter() - t0, 1)}


def print_tables(res: dict) -> None:
    print(f"\n## {res['model']}: {res['metric']} on {res['heldout']} held-out samples "
          f"({res['method']}, {res['samples']} calibration samples)\n")
    print(f"| profile | size | FP32 | INT8 per-profile | Δ | INT8 single-size ({res['single_size']}) | Δ |")
    print("|---|---|---|---|---|---|---|")
    for r in res["accuracy"]:
        mark = "*" if r["never_trained"] else ""
        d1, d2 = r["int8_per_profile"] - r["fp32"], r["int8_single_size"] - r["fp32"]
        print(f"| {r['profile']} | {r['size']}{mark} | {r['fp32'] * 100:.2f} | {r['int8_per_profile'] * 100:.2f} "
              f"| {d1 * 100:+.2f} | {r['int8_single_size'] * 100:.2f} | {d2 * 100:+.2f} |")
    print("\n(* = size never used in training)\n")
    print("| profile | opt | FP32 ms | INT8 ms | INT8 speedup |")
    print("|---|---|---|---|---|")
    for s in res["latency"]:
        print(f"| {s['profile']} | {s['opt']} | {s['fp32_ms']:.2f} | {s['int8_ms']:.2f} | {s['speedup']:.2f}x |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit", "cnn", "seg"])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    parser.add_argument("--heldout", type=int, default=359, help="held-out digits (all 359 by default)")
    parser.add_argument("--heldout-seg", type=int, default=32, help="held-out shapes scenes")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per model and precision")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--single-size", type=int, default=SINGLE_SIZE,
                        help=f"size of the one-calibration baseline (default {SINGLE_SIZE})")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for name in args.models:
            res = bench_model(name, Path(tmp), args)
            print_tables(res)
            results.append(res)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
