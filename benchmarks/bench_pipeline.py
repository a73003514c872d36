"""Latency per input resolution of the example models deployed as 3-profile fp32 bundles, against the
single dynamic ONNX model and PyTorch eager, measured side by side in one run (``mrdeploy.bench``).

    .venv/bin/python benchmarks/bench_pipeline.py [--models vit,seg] [--threads 2] [--runs 100] [--out DIR]

For each model: export (committed checkpoint loaded when present), build-engine with fixed profiles,
then bench at every profile's min/opt/max plus sizes between and outside the profiles, interleaving
bundle / dynamic ONNX / PyTorch calls with the same thread count. Prints one Markdown table per model
(p50 ms and the speed-up ratios) and writes bench.json/bench.md/bench.png per model under --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the demo's planned profiles for the ViT (ranged), and static + ranged ones for the segmentation net
PROFILES = {
    "vit": ["small=64-96@64", "mid=96x112-128@96x128", "large=128x160-176@128x160"],
    "seg": ["small=64-96@80", "mid=112-144@128", "large=192"],
    "cnn": ["small=64-96@80", "mid=112-144@128", "large=192"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="vit,seg", help="Comma-separated example names (vit, cnn, seg).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", default="build/bench_pipeline")
    args = ap.parse_args(argv)

    from examples.zoo import EXAMPLES, checkpoint_path, export_example
    from mrdeploy.bench import bench
    from mrdeploy.exporter.build import build_engine

    out = Path(args.out)
    for name in [n.strip() for n in args.models.split(",") if n.strip()]:
        spec = EXAMPLES[name]
        t0 = time.perf_counter()
        onnx_path = export_example(name, out / name / f"{name}.onnx", validate=False)
        bundle = build_engine(onnx_path, out / name / "bundle", profiles=PROFILES[name], quiet=True)
        ckpt = checkpoint_path(name)
        report = bench(bundle, reference=spec.factory_path, checkpoint=ckpt, model_args=spec.model_args,
                       threads=args.threads, runs=args.runs, warmup=args.warmup, out=out / name)
        print(f"\n## {name} ({'trained checkpoint' if ckpt else 'random weights'}; "
              f"profiles {', '.join(PROFILES[name])}; {time.perf_counter() - t0:.0f} s)\n")
        md = report.to_markdown(plot=None).splitlines()
        start = next(i for i, line in enumerate(md) if line.startswith("## Latency p50"))
        end = next(i for i, line in enumerate(md) if line.startswith("## Per profile"))
        print("\n".join(line for line in md[:start] if line.startswith("- ")))
        print("\n".join(md[start + 1:end]).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
