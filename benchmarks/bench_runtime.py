"""Runtime benchmark: measured side by side in one run on this machine.

(a) the Runner against a bare ``onnxruntime.InferenceSession`` on the same specialized model at the
    smallest size the bundle serves (64x64 for the default profiles: where a fixed per-call cost weighs
    most) and at 224x224 (same session options, calls interleaved, median of --runs each): the Runner's
    overhead (input checks, selection, engine lookup, output dict). Target: at most 3%.
(b) each profile's specialized model against the single dynamic ONNX model at the profile's opt size
    (bare sessions, same options, interleaved): ratio dynamic / specialized. Target: >= 1.0 everywhere.
(c) peak resident memory (VmHWM from /proc, each in a fresh subprocess) with nothing loaded, one profile
    loaded, every profile loaded, and every profile served in turn with max_loaded=1.

    .venv/bin/python benchmarks/bench_runtime.py                 # exports + builds the example CNN
    .venv/bin/python benchmarks/bench_runtime.py --bundle DIR    # an existing bundle
    .venv/bin/python benchmarks/bench_runtime.py --json out.json

Keep other CPU-heavy work off the machine while it runs; the numbers are medians, but two cores
shared with other jobs still add noise.
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

DEFAULT_PROFILES = ["small=64-128@96", "s224=224", "large=256-384@320"]


def build_bundle(example: str, work: Path, profiles: list[str], threads: int) -> Path:
    """Export the example and build an onnxruntime fp32 bundle with ``profiles``."""
    import torch

    from examples.zoo import export_example
    from mrdeploy.exporter.build import build_engine

    torch.set_num_threads(max(1, threads))
    model = export_example(example, work / f"{example}.onnx", validate=False)
    out = work / f"{example}.bundle"
    build_engine(model, out, profiles=profiles, backend="onnxruntime", precision="fp32", threads=threads, quiet=True)
    return out


def session(path: Path, entry, threads: int):
    """A bare ORT session with the options the Runner would use for ``entry``."""
    import onnxruntime as ort

    from mrdeploy.runtime.backends.onnxruntime import session_options

    return ort.InferenceSession(str(path), sess_options=session_options(entry, threads), providers=["CPUExecutionProvider"])


def interleaved(fns: dict, runs: int, warmup: int = 10, before=None) -> dict[str, list[float]]:
    """Time each callable ``runs`` times, alternating between them (order rotated every round);
    ``before()`` runs untimed before each call."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(runs):
        order = names[i % len(names):] + names[: i % len(names)]
        for n in order:
            if before is not None:
                before()
            t0 = time.perf_counter()
            fns[n]()
            times[n].append((time.perf_counter() - t0) * 1e3)
    return times


def overhead_at(bundle: Path, size: int, runs: int, threads: int) -> dict:
    """(a) Runner vs bare session on the profile serving ``size`` x ``size``."""
    import mrdeploy.runtime as rt

    runner = rt.load(bundle, threads=threads)
    name = runner.input_names[0]
    c = runner.model.inputs[0].channels if runner.model.inputs else 3
    x = np.random.default_rng(0).standard_normal((1, c, size, size)).astype(np.float32)
    d = runner.select(1, size, size)
    if d.action != "exact":
        raise SystemExit(f"no profile serves {size}x{size} exactly (got {d}); add one, e.g. --profile s{size}={size}")
    entry = runner.manifest.entry(d.profile.name)
    sess = session(bundle / entry.artifact, entry, threads)
    out_names = [o.name for o in sess.get_outputs()]
    ref = sess.run(out_names, {name: x})[0]
    np.testing.assert_allclose(runner(x) if len(out_names) == 1 else runner.run(x)[out_names[0]], ref, atol=1e-5)
    out = {"size": f"{size}x{size}", "profile": d.profile.name, "runs": runs}
    # fresh: every call gets an input just written (as a served request's, fresh from preprocessing);
    # reused: the same array every call, which the previous engine call has pushed out of the CPU caches
    # (the Runner's finite check then reads it from memory: the pessimistic case)
    buf = x.copy()
    for mode, feed, before in (("fresh", buf, lambda: np.copyto(buf, x)), ("reused", x, None)):
        t = interleaved({"runner": lambda f=feed: runner.run({name: f}),
                         "bare": lambda f=feed: sess.run(out_names, {name: f})}, runs, before=before)
        mr, mb = statistics.median(t["runner"]), statistics.median(t["bare"])
        # each round times both back to back: the median of the per-round differences is less sensitive
        # to load from other processes than the difference of the medians
        paired = statistics.median(a - b for a, b in zip(t["runner"], t["bare"]))
        out[mode] = {"runner_ms": mr, "bare_ms": mb, "overhead_pct": (mr - mb) / mb * 100.0,
                     "overhead_us": (mr - mb) * 1e3, "paired_overhead_pct": paired / mb * 100.0,
                     "paired_overhead_us": paired * 1e3}
    runner.close()
    return out


def specialized_vs_dynamic(bundle: Path, runs: int, threads: int) -> list[dict]:
    """(b) every profile's artifact vs the source dynamic model at the profile's opt."""
    from mrdeploy.runtime.manifest import Manifest

    m = Manifest.read(bundle)
    rows = []
    for e in m.profiles:
        feeds = {n: np.random.default_rng(1).standard_normal(r.opt).astype(np.float32) for n, r in e.profile.inputs.items()}
        spec = session(bundle / e.artifact, e, threads)
        dyn = session(bundle / m.source["artifact"], e, threads)
        names = [o.name for o in spec.get_outputs()]
        err = max(float(np.abs(a - b).max()) for a, b in zip(spec.run(names, feeds), dyn.run(names, feeds)))
        t = interleaved({"specialized": lambda s=spec, f=feeds, n=names: s.run(n, f),
                         "dynamic": lambda s=dyn, f=feeds, n=names: s.run(n, f)}, runs)
        ms, md = statistics.median(t["specialized"]), statistics.median(t["dynamic"])
        opt = next(iter(e.profile.inputs.values())).opt
        paired = statistics.median(d / s for d, s in zip(t["dynamic"], t["specialized"]))
        nodes = (e.options or {}).get("nodes")
        rows.append({"profile": e.name, "opt": f"{opt[-2]}x{opt[-1]}", "specialized_ms": ms, "dynamic_ms": md,
                     "ratio": md / ms, "paired_ratio": paired, "max_abs_diff": err, "runs": runs, "nodes": nodes})
    return rows


_RSS_CODE = r"""
import json, sys
import numpy as np
import mrdeploy.runtime as rt
bundle, mode, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = rt.load(bundle, threads=threads, max_loaded=1 if mode == "lru" else None)
def feed(e):
    return {n: np.zeros(rr.opt, np.float32) for n, rr in e.profile.inputs.items()}
if mode == "one":
    e = max(r.entries, key=lambda e: e.profile.area("opt"))
    r.run_profile(e.name, feed(e))
elif mode in ("all", "lru"):
    for e in r.entries:
        r.run_profile(e.name, feed(e))
# VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak across fork/exec)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"mode": mode, "loaded": r.loaded, "peak_rss_mb": hwm / 1024}))
"""


def peak_rss(bundle: Path, threads: int) -> list[dict]:
    """(c) peak RSS of fresh processes: none / the largest profile / all / all with max_loaded=1."""
    rows = []
    for mode in ("none", "one", "all", "lru"):
        out = subprocess.run([sys.executable, "-c", _RSS_CODE, str(bundle), mode, str(threads)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="an existing bundle (default: export + build --example)")
    ap.add_argument("--example", default="cnn", help="example to export and build (default: cnn)")
    ap.add_argument("--profile", action="append", dest="profiles", help=f"profiles to build (default: {DEFAULT_PROFILES})")
    ap.add_argument("--sizes", default="min,224",
                    help="square sizes for the overhead comparison; min: the smallest size served (default min,224)")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per series (>= 200; default 300)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for every session (default 1)")
    ap.add_argument("--work", type=Path, help="where to export/build (default: a temporary directory)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    tmp = None
    bundle = args.bundle
    if bundle is None:
        work = args.work or Path(tmp := tempfile.mkdtemp(prefix="bench_runtime."))
        work.mkdir(parents=True, exist_ok=True)
        print(f"building {args.example} bundle in {work} ...", flush=True)
        bundle = build_bundle(args.example, work, args.profiles or DEFAULT_PROFILES, args.threads)

    import onnxruntime as ort

    results = {
        "bundle": str(bundle), "threads": args.threads, "onnxruntime": ort.__version__,
        "command": "python benchmarks/bench_runtime.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(f"bundle {bundle}, {args.threads} thread(s), onnxruntime {ort.__version__}")

    from mrdeploy.runtime.manifest import Manifest

    smallest = min(min(e.profile.inputs.values(), key=lambda r: r.min[2] * r.min[3]).min[2]
                   for e in Manifest.read(bundle).profiles)
    sizes = [smallest if s.strip() == "min" else int(s) for s in args.sizes.split(",")]
    results["runner_vs_bare"] = []
    for size in sizes:
        r = overhead_at(bundle, size, args.runs, args.threads)
        results["runner_vs_bare"].append(r)
        print(f"\n(a) Runner vs bare InferenceSession, {r['size']} (profile {r['profile']}), median of {r['runs']} interleaved runs")
        for mode in ("fresh", "reused"):
            a = r[mode]
            verdict = "OK" if a["overhead_pct"] <= 3.0 else "ABOVE TARGET"
            print(f"    {mode:<6} input: runner {a['runner_ms']:.3f} ms   bare {a['bare_ms']:.3f} ms   overhead "
                  f"{a['overhead_pct']:+.2f}% ({a['overhead_us']:+.0f} us)   target <= 3%: {verdict}")
            print(f"                  median of per-round differences: {a['paired_overhead_us']:+.0f} us "
                  f"({a['paired_overhead_pct']:+.2f}%)")

    b = specialized_vs_dynamic(bundle, args.runs, args.threads)
    results["specialized_vs_dynamic"] = b
    print(f"\n(b) specialized profile model vs the dynamic model at each profile's opt, median of {args.runs}")
    print(f"    {'profile':<10} {'opt':>9} {'specialized':>12} {'dynamic':>10} {'ratio':>7} {'paired':>7}  "
          f"{'nodes':>9}  max|diff|")
    for r in b:
        flag = "" if r["ratio"] >= 1.0 else "  < 1.0"
        nodes = f"{r['nodes']['source']}->{r['nodes']['specialized']}" if isinstance(r["nodes"], dict) else "?"
        print(f"    {r['profile']:<10} {r['opt']:>9} {r['specialized_ms']:>9.3f} ms {r['dynamic_ms']:>7.3f} ms "
              f"{r['ratio']:>7.3f} {r['paired_ratio']:>7.3f}  {nodes:>9}  {r['max_abs_diff']:.1e}{flag}")
    print("    ratio: median dynamic / median specialized; paired: median of per-round ratios")

    c = peak_rss(bundle, args.threads)
    results["peak_rss"] = c
    print("\n(c) peak resident memory, fresh process each")
    for r in c:
        print(f"    {r['mode']:<5} loaded at exit {str(r['loaded']):<32} peak {r['peak_rss_mb']:.1f} MB")

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
