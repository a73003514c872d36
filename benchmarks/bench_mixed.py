"""Mixed sizes through one Runner: per-call latency when consecutive requests land on different profiles.

A served stream is rarely one size. Each request of a mixed stream goes to its profile's engine, so one
process alternates between several ONNX Runtime sessions. This script builds EfficientNet-Lite1
(ImageNet weights) into an onnxruntime fp32 bundle with three profiles and ``--threads`` intra-op
threads, then serves real photo crops at seven sizes round-robin, in three targets, each in its own
process, alternating, ``--rounds`` rounds:

- ``ours``: ``mrdeploy.runtime.load(bundle)`` (its sessions stop their pool threads spinning when a call
  returns: ``session.force_spinning_stop``);
- ``ours, default spinning``: the same with ONNX Runtime's default (threads keep spinning after a call:
  what the Runner did before);
- ``plain ORT``: one ``onnxruntime.InferenceSession`` on the dynamic source model, default options
  and the same thread count (the peer a user compares with).

Printed per size: median ms per call over the rounds' medians, and the ratios. Also each target with
one size at a time (``alone``), to show what alternating costs.

    .venv/bin/python benchmarks/bench_mixed.py [--threads 2] [--rounds 3] [--cycles 20] [--json out.json]

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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROFILES = ["p160=128-192@160", "s224=224", "p288=256-320@288"]
SIZES = (128, 160, 192, 224, 256, 288, 320)
TARGETS = ("ours", "ours, default spinning", "plain ORT")


def serve(target: str, bundle: str, source: str, threads: int, cycles: int) -> dict:
    """Run in a child process: per size, median ms in a mixed stream and with one size at a time."""
    import numpy as np

    from examples.real import models as real
    from examples.real import photos

    xs = {s: np.ascontiguousarray(photos.batch("eval", 1, (s, s), real.LITE_MEAN, real.LITE_STD, seed=s))
          for s in SIZES}
    if target == "plain ORT":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def call(x):
            return sess.run(None, {name: x})
    else:
        import mrdeploy.runtime as rt
        from mrdeploy.runtime.backends import onnxruntime as ortb

        if target == "ours, default spinning":
            ortb.SESSION_DEFAULTS = {}
        runner = rt.load(bundle, threads=threads)
        call = runner.run
    for s in SIZES:  # warm: every engine loaded, every shape seen
        call(xs[s])
        call(xs[s])
    mixed: dict[int, list[float]] = {s: [] for s in SIZES}
    for _ in range(cycles):
        for s in SIZES:
            t = time.perf_counter()
            call(xs[s])
            mixed[s].append(time.perf_counter() - t)
    alone: dict[int, list[float]] = {s: [] for s in SIZES}
    for s in SIZES:
        for _ in range(cycles):
            t = time.perf_counter()
            call(xs[s])
            alone[s].append(time.perf_counter() - t)
    return {"mixed": {s: statistics.median(v) * 1e3 for s, v in mixed.items()},
            "alone": {s: statistics.median(v) * 1e3 for s, v in alone.items()}}


def spawn(target: str, bundle: Path, source: Path, threads: int, cycles: int) -> dict:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from benchmarks.bench_mixed import serve; "
            "print(json.dumps(serve(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), target, str(bundle), str(source), str(threads),
                          str(cycles)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: {int(s): v for s, v in d.items()} for k, d in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cycles", type=int, default=20, help="Calls per size per round.")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from examples.real import models as real
    from mrdeploy.exporter.build import build_bundle

    work = Path(tempfile.mkdtemp(prefix="bench_mixed."))
    source = work / "lite1.onnx"
    real.export_lite1(source)
    bundle = work / "lite1.bundle"
    build_bundle(source, bundle, PROFILES, threads=args.threads, quiet=True)
    print(f"EfficientNet-Lite1 fp32, onnxruntime bundle {' '.join(PROFILES)}, {args.threads} threads; sizes "
          f"{', '.join(map(str, SIZES))} round-robin, {args.cycles} calls per size per round, {args.rounds} rounds",
          flush=True)
    runs: dict[str, list[dict]] = {t: [] for t in TARGETS}
    for r in range(args.rounds):
        order = TARGETS[r % len(TARGETS):] + TARGETS[:r % len(TARGETS)]
        for t in order:
            runs[t].append(spawn(t, bundle, source, args.threads, args.cycles))
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    med = {t: {kind: {s: statistics.median(run[kind][s] for run in runs[t]) for s in SIZES}
               for kind in ("mixed", "alone")} for t in TARGETS}
    print(f"\nms per call, median of {args.rounds} rounds (each a median of {args.cycles} calls)")
    print(f"{'size':>5}  {'ours':>8} {'spinning':>10} {'plain ORT':>10}   {'plain/ours':>10} {'spin/ours':>9}"
          f"   alone: {'ours':>6} {'spinning':>10} {'plain':>6}")
    for s in SIZES:
        o, p, q = (med[t]["mixed"][s] for t in TARGETS)
        a = [med[t]["alone"][s] for t in TARGETS]
        print(f"{s:>5}  {o:8.2f} {p:10.2f} {q:10.2f}   {q / o:9.2f}x {p / o:8.2f}x   "
              f"       {a[0]:6.2f} {a[1]:10.2f} {a[2]:6.2f}")
    geo = {t: statistics.geometric_mean(med[t]["mixed"].values()) for t in TARGETS}
    print(f"geometric mean over sizes, mixed stream: plain ORT / ours {geo['plain ORT'] / geo['ours']:.2f}x, "
          f"default spinning / ours {geo['ours, default spinning'] / geo['ours']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": med}, indent=2) + "\n")


if __name__ == "__main__":
    main()
