"""Reliability benchmark (not a timed test): concurrency and memory of one Runner.

(a) concurrency: a pool of inputs of mixed sizes (inside, between and outside the profiles, so exact,
    pad and resize all happen) is run once sequentially; then --threads threads make --calls calls
    each on the same Runner, every thread in its own seeded order, and every output is compared
    bit for bit (np.array_equal, same dtype and shape) with the sequential one.
(b) memory: --soak sequential calls over the same pool, resident memory (VmRSS) read every
    --every calls; the growth from the first reading to the last is the number to watch.

    .venv/bin/python benchmarks/bench_reliability.py                     # the example CNN, exported + built
    .venv/bin/python benchmarks/bench_reliability.py --bundle DIR        # an existing bundle
    .venv/bin/python benchmarks/bench_reliability.py --threads 8 --calls 500 --soak 5000 --every 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROFILES = ["small=64-96@80", "mid=112-144@128", "large=192"]
SIZES = [(64, 64), (80, 96), (96, 72), (112, 144), (128, 128), (144, 120), (192, 192),  # inside: exact
         (48, 56), (100, 100), (160, 176), (200, 208), (40, 232)]  # between / outside: pad or resize


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(work: Path) -> Path:
    from examples.zoo import export_example
    from mrdeploy.exporter.build import build_engine

    model = export_example("cnn", work / "cnn.onnx", validate=False)
    return build_engine(model, work / "cnn.bundle", PROFILES, threads=1, quiet=True)


def pool(runner, n_per_size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    c = runner.model.inputs[0].channels
    return [rng.standard_normal((1, c, h, w), dtype=np.float32) for h, w in SIZES for _ in range(n_per_size)]


def concurrency(runner, inputs, reference, threads: int, calls: int) -> dict:
    mismatches, errors, actions = [], [], {}
    lock = threading.Lock()

    def worker(k: int) -> None:
        order = np.random.default_rng(100 + k).integers(0, len(inputs), calls)
        for i in order:
            try:
                out, info = runner.run_with_info(inputs[i])
            except Exception as e:  # counted, not raised: the run goes on to report every thread
                with lock:
                    errors.append(repr(e))
                continue
            ref = reference[i]
            same = out.keys() == ref.keys() and all(
                out[n].dtype == ref[n].dtype and out[n].shape == ref[n].shape and np.array_equal(out[n], ref[n])
                for n in ref
            )
            with lock:
                actions[info.decision.action] = actions.get(info.decision.action, 0) + 1
                if not same:
                    mismatches.append(int(i))

    start = time.perf_counter()
    pool_threads = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool_threads:
        t.start()
    for t in pool_threads:
        t.join()
    return {"calls": threads * calls, "mismatches": len(mismatches), "errors": len(errors),
            "actions": actions, "seconds": time.perf_counter() - start, "first_error": errors[:1]}


def soak(runner, inputs, total: int, every: int) -> list[tuple[int, float]]:
    readings = [(0, rss_mib())]
    for k in range(1, total + 1):
        runner(inputs[k % len(inputs)])
        if k % every == 0:
            readings.append((k, rss_mib()))
    return readings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="An existing bundle (default: export and build the example CNN).")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--calls", type=int, default=500, help="Calls per thread.")
    ap.add_argument("--soak", type=int, default=5000, help="Sequential calls for the memory reading.")
    ap.add_argument("--every", type=int, default=1000, help="Read RSS every this many calls.")
    ap.add_argument("--per-size", type=int, default=4, help="Inputs per size in the pool.")
    args = ap.parse_args(argv)

    import mrdeploy.runtime as rt

    with tempfile.TemporaryDirectory(prefix="bench_reliability.") as tmp:
        bundle = args.bundle or build(Path(tmp))
        with rt.load(bundle, threads=1) as runner:
            inputs = pool(runner, args.per_size)
            t0 = time.perf_counter()
            reference = [runner.run(x) for x in inputs]  # sequential, one thread
            seq_s = time.perf_counter() - t0
            print(f"bundle {bundle}: profiles {', '.join(p.describe() for p in runner.profiles)}; policy "
                  f"{runner.policy}; {len(inputs)} inputs of {len(SIZES)} sizes; 1 intra-op thread per engine")
            c = concurrency(runner, inputs, reference, args.threads, args.calls)
            print(f"concurrency: {args.threads} threads x {args.calls} calls = {c['calls']} calls in "
                  f"{c['seconds']:.1f} s; actions {c['actions']}; outputs differing from the sequential run: "
                  f"{c['mismatches']}; errors: {c['errors']} {c['first_error'] or ''}".rstrip())
            print(f"(the sequential reference: {len(inputs)} calls in {seq_s:.2f} s)")
            readings = soak(runner, inputs, args.soak, args.every)
        base, last = readings[0][1], readings[-1][1]
        print("memory: RSS (MiB) after " + ", ".join(f"{k} calls {v:.1f}" for k, v in readings))
        print(f"memory: {last - base:+.1f} MiB ({(last - base) / base * 100:+.2f}%) from the first reading to the "
              f"last; {readings[-1][1] - readings[1][1]:+.1f} MiB after the first {args.every} calls")
    return 1 if c["mismatches"] or c["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
