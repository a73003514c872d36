"""ONNX Runtime against OpenVINO bundles of one real model, fp32 and int8, measured side by side in one run.

EfficientNet-Lite1 (ImageNet weights) exported once, built into four bundles with the same static
profiles (``--sizes``): ``onnxruntime`` and ``openvino``, each fp32 and int8 (calibrated on the same
photo crops, examples/real/photos.py). Latency: each bundle in its own process (several backends'
thread pools in one process disturb each other), one process at a time, alternating, ``--rounds``
rounds, median of ``--calls`` calls per round, batch 1, ``--threads`` threads; the median round is
reported with the spread of the rounds. Accuracy: top-1 agreement of each bundle with the fp32 source
model on ``--eval`` photo crops that calibration never saw.

    .venv/bin/python benchmarks/bench_backends.py [--sizes 224,160] [--rounds 3] [--threads 2]

Keep other CPU-heavy work off the machine while it runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")]

TIMER = """
import json, statistics, sys, time
import numpy as np
import mrdeploy.runtime as rt
bundle, sizes, calls, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = {}
with rt.load(bundle, threads=threads) as r:
    for s in sizes:
        x = np.random.default_rng(0).standard_normal((1, 3, s, s)).astype(np.float32)
        for _ in range(10):
            r(x)
        ts = []
        for _ in range(calls):
            t = time.perf_counter(); r(x); ts.append(time.perf_counter() - t)
        out[s] = statistics.median(ts) * 1e3
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="224,160")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", type=int, default=30)
    ap.add_argument("--eval", type=int, default=40)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    import mrdeploy
    from examples.real import photos
    from examples.real.models import LITE_MEAN, LITE_STD
    from mrdeploy.exporter.specialize import cpu_session

    work = Path(tempfile.mkdtemp(prefix="bench_backends."))
    src = work / "lite1.onnx"
    mrdeploy.export("examples/real/models.py:efficientnet_lite1", (1, 3, 224, 224), src, divisor=32, min_size=96,
                    max_size=512, mean=LITE_MEAN, std=LITE_STD, task="classification", validate=False,
                    name="efficientnet_lite1")
    calib = photos.write_folder(work / "calib", "calib", args.calib)
    bundles = {}
    for backend, prec in TARGETS:
        t = time.perf_counter()
        path = work / f"{backend}.{prec}"
        extra = dict(calib_data=calib, calib_method="minmax") if prec == "int8" else {}
        mrdeploy.build_engine(src, path, [f"s{s}={s}" for s in sizes], backend=backend, precision=prec,
                              threads=args.threads, quiet=True, **extra)
        bundles[f"{backend} {prec}"] = path
        print(f"built {backend} {prec} in {time.perf_counter() - t:.0f} s")

    ref = cpu_session(src, args.threads)
    agree = {}
    for name, path in bundles.items():
        with mrdeploy.load(path, threads=args.threads) as r:
            for s in sizes:
                x = photos.batch("eval", args.eval, (s, s), LITE_MEAN, LITE_STD)
                want = ref.run(None, {"input": x})[0].argmax(1)
                got = np.array([r(x[i:i + 1]).argmax() for i in range(len(x))])
                agree[(name, s)] = float(np.mean(got == want))

    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, path in bundles.items():
            out = subprocess.run([sys.executable, "-c", TIMER, str(path), json.dumps(sizes), str(args.calls),
                                  str(args.threads)], capture_output=True, text=True, check=True).stdout
            for s, ms in json.loads(out).items():
                times.setdefault((name, int(s)), []).append(ms)

    print(f"\nEfficientNet-Lite1, batch 1, {args.threads} threads, median of {args.rounds} rounds x {args.calls} calls "
          f"(min-max of the rounds); top-1 agreement with the fp32 source on {args.eval} photo crops")
    print(f"{'size':>6} " + " ".join(f"{n:>28}" for n in bundles) + f" {'OV/ORT fp32':>12} {'OV/ORT int8':>12}")
    for s in sizes:
        med = {n: statistics.median(times[(n, s)]) for n in bundles}
        cells = [f"{med[n]:6.2f} ms ({min(times[(n, s)]):.2f}-{max(times[(n, s)]):.2f}) {agree[(n, s)]:.2f}"
                 for n in bundles]
        fp32 = med["onnxruntime fp32"] / med["openvino fp32"]
        int8 = med["onnxruntime int8"] / med["openvino int8"]
        print(f"{s:>6} " + " ".join(f"{c:>28}" for c in cells) + f" {fp32:>11.2f}x {int8:>11.2f}x")
    print("(OV/ORT: how many times faster the OpenVINO bundle served than the ONNX Runtime one)")


if __name__ == "__main__":
    main()
