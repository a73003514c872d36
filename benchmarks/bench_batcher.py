"""Batcher benchmark: throughput and p50/p99 latency with 1, 4 and 16 concurrent clients sending mixed
sizes, ``mrdeploy.runtime.Batcher`` against the plain Runner, measured side by side in one run.

The bundle: a real CNN exported with its pretrained weights and built with batch ranges (1-8@1):
EfficientNet-Lite1 (default; ImageNet weights) or MTCNN P-Net (``--model pnet``; fully convolutional). Every client
thread sends requests round-robin over ``--sizes`` (mixed: several profiles, some padded) for
``--seconds``; the Runner and the Batcher cells alternate per client count, ``--rounds`` times, and
the median round is reported. Before timing, each size is checked: Batcher output == Runner output.

    .venv/bin/python benchmarks/bench_batcher.py                       # Lite1, 2 s per cell
    .venv/bin/python benchmarks/bench_batcher.py --model pnet --seconds 3 --json out.json
    .venv/bin/python benchmarks/bench_batcher.py --bundle DIR --sizes 64,96,128x100
    .venv/bin/python benchmarks/bench_batcher.py --threads 2 --workers 1   # fewer, wider engine calls
    .venv/bin/python benchmarks/bench_batcher.py --precision int8          # INT8 (batches pay more per image)

Keep other CPU-heavy work off the machine while it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = {
    # name: (factory, profiles, default sizes, export kwargs). Lite1: three static profiles, the sizes
    # between them padded up (policy pad), so six client sizes land on three served shapes.
    "lite1": ("examples/real/models.py:efficientnet_lite1", ["s64=64", "s96=96", "s128=128"],
              "64,56x60,80x90,96,100x120,128", dict(task="classification", min_size=(32, 32))),
    "pnet": ("examples/real/models.py:mtcnn_pnet", ["small=24-48@32", "mid=48-96@64", "s128=128"],
             "32,64,128,100x120,40x40", dict(task="dense", output_names=["prob", "boxes"], min_size=(12, 12))),
}


def build(model: str, work: Path, threads: int, backend: str, precision: str) -> Path:
    from examples.real import models as real
    from examples.real import photos
    from mrdeploy.exporter.api import export
    from mrdeploy.exporter.build import build_bundle

    factory, profiles, _, kwargs = MODELS[model]
    mean, std = (real.MTCNN_MEAN, real.MTCNN_STD) if model == "pnet" else (real.LITE_MEAN, real.LITE_STD)
    onnx = work / f"{model}.onnx"
    export(factory, (1, 3, 64, 64), onnx, max_size=(256, 256), mean=mean, std=std, name=model,
           validate=False, **kwargs)
    out = work / f"{model}.bundle"
    calib = {}
    if precision == "int8":  # calibrated per profile on real photo crops (the int8 issue's default flags)
        calib = dict(calib_data=photos.write_folder(work / "calib", "calib", 30), calib_samples=30)
    build_bundle(onnx, out, profiles, batch="1-8@1", policy="pad", threads=threads, quiet=True,
                 backend=backend, precision=precision, **calib)
    return out


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        h, _, w = part.strip().partition("x")
        out.append((int(h), int(w or h)))
    return out


def cell(call, inputs: list[np.ndarray], clients: int, seconds: float) -> dict:
    """``clients`` threads calling ``call`` round-robin over ``inputs`` for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(k: int) -> None:
        start.wait()
        i = k
        while time.perf_counter() < stop_at[0]:
            x = inputs[i % len(inputs)]
            t0 = time.perf_counter()
            call(x)
            latencies[k].append((time.perf_counter() - t0) * 1e3)
            i += 1

    with ThreadPoolExecutor(clients) as ex:
        futures = [ex.submit(client, k) for k in range(clients)]
        stop_at[0] = time.perf_counter() + seconds
        start.wait()
        t0 = time.perf_counter()
        for f in futures:
            f.result()
        elapsed = time.perf_counter() - t0
    lat = sorted(v for per in latencies for v in per)
    return {
        "requests": len(lat),
        "throughput": len(lat) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def one_client(runner, batcher, inputs: list[np.ndarray], runs: int) -> dict[str, dict[str, float]]:
    """One client, Runner and Batcher calls interleaved per size: p50 ms of each and the difference."""
    out = {}
    for x in inputs:
        times = {"runner": [], "batcher": []}
        for i in range(runs):
            for mode in (("runner", "batcher") if i % 2 else ("batcher", "runner")):
                call = runner.run if mode == "runner" else batcher.run
                t0 = time.perf_counter()
                call(x)
                times[mode].append((time.perf_counter() - t0) * 1e3)
        p50 = {m: float(np.median(v)) for m, v in times.items()}
        out[f"{x.shape[2]}x{x.shape[3]}"] = {**p50, "added": p50["batcher"] - p50["runner"]}
    return out


def batch_cost(runner, inputs: list[np.ndarray], max_batch: int, runs: int) -> tuple[list[dict], float]:
    """Per served shape, the engine's ms per image at batch 1 and at ``max_batch`` (calls interleaved,
    median of ``runs``); and the most a perfectly batched stream of ``inputs`` can gain: the sum over the
    inputs of batch-1 cost over the sum of stacked cost."""
    rows, seen = [], {}
    for x in inputs:
        d = runner.run_with_info(x)[1].decision
        key = (d.profile.name, tuple(next(iter(d.served_shapes.values()))[1:]))
        if key not in seen:
            one = runner._fit(runner._check_inputs(x), d)
            many = {n: np.concatenate([a] * max_batch) for n, a in one.items()}
            times: dict[int, list[float]] = {1: [], max_batch: []}
            for _ in range(runs):
                for b, feeds in ((1, one), (max_batch, many)):
                    t0 = time.perf_counter()
                    runner._run_fitted(d.profile.name, feeds)
                    times[b].append((time.perf_counter() - t0) * 1e3 / b)
            seen[key] = {"profile": key[0], "shape": "x".join(map(str, key[1][-2:])),
                         "ms_b1": float(np.median(times[1])), "ms_bmax": float(np.median(times[max_batch]))}
            rows.append(seen[key])
        seen.setdefault(("inputs",), []).append(key)
    keys = seen[("inputs",)]
    ceiling = sum(seen[k]["ms_b1"] for k in keys) / sum(seen[k]["ms_bmax"] for k in keys)
    return rows, ceiling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=list(MODELS), default="lite1")
    ap.add_argument("--bundle", type=Path, help="An existing bundle with batch ranges (skips export/build).")
    ap.add_argument("--sizes", help="Comma-separated HxW sizes (default: the model's mixed set).")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=2.0, help="Per cell.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", default="onnxruntime", help="The bundle's backend (default onnxruntime).")
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                    help="int8: calibrated per profile on 30 real photo crops.")
    ap.add_argument("--threads", type=int, default=1, help="Intra-op threads per engine.")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--workers", type=int, help="Engine calls at once (default: the Batcher's, the CPU count).")
    ap.add_argument("--max-delay-ms", type=float, default=0.0,
                    help="The Batcher's max_delay_ms (default 0, the Batcher's; runs recorded before 2026-12-02 "
                         "08:45 UTC used 2.0).")
    ap.add_argument("--solo-runs", type=int, default=40, help="Interleaved one-client calls per size and mode.")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import mrdeploy.runtime as rt

    t0 = time.perf_counter()
    bundle = args.bundle or build(args.model, Path(tempfile.mkdtemp(prefix="bench_batcher.")), args.threads,
                                  args.backend, args.precision)
    sizes = parse_sizes(args.sizes or MODELS[args.model][2])
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3, h, w)).astype(np.float32) for h, w in sizes]
    clients = [int(c) for c in args.clients.split(",")]
    runner = rt.load(bundle, threads=args.threads)
    runner.warmup()
    batcher = rt.Batcher(runner, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, workers=args.workers)
    print(f"bundle {bundle}, {args.threads} intra-op thread(s) per engine, max_batch {args.max_batch}, "
          f"max_delay_ms {args.max_delay_ms}, build {time.perf_counter() - t0:.0f} s")
    for x in inputs:
        d = runner.run_with_info(x)[1].decision
        ref, got = runner.run(x), batcher.run(x)
        err = max(float(np.max(np.abs(got[n] - ref[n]))) for n in ref)
        assert err <= 1e-5, (x.shape, err)
        print(f"  size {x.shape[2]}x{x.shape[3]}: {d}; Batcher vs Runner max abs err {err:.1e}")

    costs, ceiling = batch_cost(runner, inputs, args.max_batch, args.solo_runs)
    print(f"\nengine cost per image, batch 1 and batch {args.max_batch} (median of {args.solo_runs}, interleaved):")
    for c in costs:
        print(f"  {c['profile']:>6} {c['shape']:>9}  batch 1 {c['ms_b1']:6.2f} ms  batch {args.max_batch} "
              f"{c['ms_bmax']:6.2f} ms  ({c['ms_b1'] / c['ms_bmax']:.2f}x)")
    print(f"  the most batching can gain on this mix of sizes (one engine call at a time): {ceiling:.2f}x")

    solo = one_client(runner, batcher, inputs, args.solo_runs)
    print(f"\none client, calls interleaved, p50 of {args.solo_runs} each (ms):")
    for size, r in solo.items():
        print(f"  {size:>9}  runner {r['runner']:7.2f}  batcher {r['batcher']:7.2f}  added {r['added']:+.3f}")

    rows = []
    for c in clients:
        rounds = {"runner": [], "batcher": []}
        for _ in range(args.rounds):
            rounds["runner"].append(cell(runner.run, inputs, c, args.seconds))
            batcher.batch_sizes.clear()
            rounds["batcher"].append(cell(batcher.run, inputs, c, args.seconds))
            rounds["batcher"][-1]["batch_sizes"] = dict(sorted(batcher.batch_sizes.items()))
        for mode, cells in rounds.items():
            med = sorted(cells, key=lambda r: r["throughput"])[len(cells) // 2]
            rows.append({"clients": c, "mode": mode, **med,
                         "throughput_rounds": [round(r["throughput"], 1) for r in cells]})
    batcher.close()
    runner.close()

    print(f"\n{'clients':>7}  {'mode':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  {'vs runner':>9}  stacked batch sizes")
    by = {(r["clients"], r["mode"]): r for r in rows}
    for c in clients:
        for mode in ("runner", "batcher"):
            r = by[(c, mode)]
            ratio = r["throughput"] / by[(c, "runner")]["throughput"]
            hist = ", ".join(f"{b}:{n}" for b, n in r.get("batch_sizes", {}).items())
            print(f"{c:>7}  {mode:<8} {r['throughput']:8.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}  "
                  f"{ratio:8.2f}x  {hist}")
    worst = max(r["added"] for r in solo.values())
    print(f"\np50 added by the Batcher at 1 client (interleaved, worst size): {worst:+.3f} ms "
          f"(max_delay_ms {args.max_delay_ms})")
    last = clients[-1]
    print(f"throughput Batcher / Runner at {last} clients: "
          f"{by[(last, 'batcher')]['throughput'] / by[(last, 'runner')]['throughput']:.2f}x")
    print(f"median of {args.rounds} rounds of {args.seconds:g} s per cell")
    if args.json:
        args.json.write_text(json.dumps({"bundle": str(bundle), "sizes": sizes, "one_client": solo, "rows": rows,
                                         "batch_cost": costs, "batch_ceiling": ceiling}, indent=2))


if __name__ == "__main__":
    main()
