"""mrdeploy against its CPU peers, per model and per size, in one run (issue 12).

Per model and per size (batch 1, ``--threads`` threads, a real photo crop as input), each target is
timed in its own process: one process per target per round, one alive at a time, targets alternating
within a round (their order rotated every round); a process times ``--calls`` calls per size after
``--warmup`` untimed ones (stopping after ``--budget`` seconds, at least 5 calls) and reports the median; the table shows the median over rounds and the noise
(min-max of the round medians). Targets:

- ``PyTorch eager``: the torch model, ``torch.set_num_threads(T)``, ``torch.inference_mode()``;
- ``ORT dynamic``: one plain ``onnxruntime.InferenceSession`` of the dynamic-H/W export, all sizes;
- ``plain ORT INT8``: ``quant_pre_process`` + ``quantize_static`` as ORT's docs show it (QDQ, per-channel,
  uint8 activations, int8 weights, MinMax), calibrated once at ``--calib-size`` on the calibration crops,
  default session options;
- ``OpenVINO default``: ``core.compile_model`` of the ONNX export reshaped to the size (static, what an
  OpenVINO user does for a fixed resolution), ``PERFORMANCE_HINT=LATENCY``, ``INFERENCE_NUM_THREADS=T``;
  OpenVINO picks bf16 where the CPU has it (the precision it chose is printed);
- ``OpenVINO on ORT Q/DQ``: the same with plain ORT's INT8 model;
- ``OpenVINO NNCF INT8``: ``nncf.quantize`` (OpenVINO's own post-training quantizer, its defaults;
  ``model_type=TRANSFORMER`` for ViTs as its docs say) on the same calibration crops at ``--calib-size``;
- ``ours B P``: for every ``B:P`` of ``--ours``, a bundle built with
  ``mrdeploy.exporter.build.build_bundle(..., backend=B, precision=P)`` with one static profile per size
  (INT8 calibrated per profile on the same calibration crops), served by ``mrdeploy.runtime.load`` (the
  Runner, so its per-call cost is included). A backend/precision the installed mrdeploy refuses is
  skipped with a printed note.

Accuracy: per target and size, top-1 agreement with the FP32 PyTorch model on ``--eval`` photo crops
(examples/real/photos.py, right halves) that calibration (left halves) never saw, on all of them
(``top-1``) and on the *stable* ones (``stable``: the crops whose FP32 class survives two draws of one
grey level of noise; many crops are textures where FP32's top two classes are neck and neck, and no
INT8 model can be held to those). ``--max-drop D`` builds our int8/auto (and bf16/fp16) bundles with that budget, held
to it on ``--heldout`` other crops of the calibration halves.

Per model it prints a table: size, target, ms (median of round medians), noise (min-max of round
medians), speed-up over eager (eager ms / ms), ratio to the fastest peer (fastest peer ms / ms: >= 1.00
means at least as fast as every peer) and top-1 agreement; it writes ``peers.json`` and ``peers.png``
(latency against resolution) into ``--out``.

    .venv/bin/python benchmarks/bench_peers.py --models lite1,lite2 --sizes 160,224,288 --rounds 3
    .venv/bin/python benchmarks/bench_peers.py --quick            # smoke run: cnn, one size, few calls
    .venv/bin/python benchmarks/bench_peers.py --ours onnxruntime:fp32,onnxruntime:int8,openvino:fp32,auto:auto

Models: ``lite1``/``lite2`` (EfficientNet-Lite, real ImageNet weights), ``cnn``/``vit`` (the examples
with their trained checkpoints; digit models, so agreement on photos measures fidelity, not accuracy),
``vits`` (a ViT-S/16-class ResFormer, dim 384, 12 blocks, 6 heads, with random but fixed weights: no
real ViT weights are available offline without timm/torchvision; agreement on it is a fidelity check).
Keep other CPU-heavy work off the machine while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
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

HALF = (0.5, 0.5, 0.5)
MODELS = {
    "lite1": dict(title="EfficientNet-Lite1 (ImageNet weights)", factory="examples/real/models.py:efficientnet_lite1",
                  divisor=32, min_size=96, max_size=512),
    "lite2": dict(title="EfficientNet-Lite2 (ImageNet weights)", factory="examples/real/models.py:efficientnet_lite2",
                  divisor=32, min_size=96, max_size=512),
    "cnn": dict(title="example two-stream CNN (trained on digits)", example="cnn"),
    "vit": dict(title="example ResFormer-tiny ViT (trained on digits)", example="vit", transformer=True),
    "vits": dict(title="ViT-S/16-class ResFormer (random fixed weights)", factory="examples/resformer.py:resformer_tiny",
                 model_args=dict(num_classes=1000, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                                 mlp_ratio=4.0, base_grid=14, seed=0),
                 divisor=16, min_size=64, max_size=512, transformer=True),
}
PEERS = {
    "eager": "PyTorch eager",
    "ort": "ORT dynamic",
    "ort-int8": "plain ORT INT8",
    "ov": "OpenVINO default",
    "ov-qdq": "OpenVINO on ORT Q/DQ",
    "ov-nncf": "OpenVINO NNCF INT8",
}
DEFAULT_OURS = "onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:int8,auto:auto"


def _progress(enabled: bool):
    def say(msg: str) -> None:
        if enabled:
            sys.stderr.write(f"\r\033[K{msg}")
            sys.stderr.flush()
    return say


# ------------------------------------------------------------------------------------------- worker
# Runs in its own process: loads one target, times it at every size, optionally records top-1 on the
# evaluation crops, and prints one JSON line. Imports only what that target needs.


def _factory(spec: dict):
    """The eval-mode torch model of a model spec (with the example's checkpoint)."""
    if "example" in spec:
        from examples.zoo import build_example

        return build_example(spec["example"])
    from mrdeploy.exporter.loading import load_model

    file, _, fn = spec["factory"].rpartition(":")
    return load_model(f"{ROOT / file}:{fn}", spec.get("model_args") or None)


def _ov_compile(path: str, size: int, threads: int):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    model.reshape({model.inputs[0].get_any_name(): [1, 3, size, size]})
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
    req = compiled.create_infer_request()

    def run(x):
        req.infer({0: x}, share_inputs=True)
        return req.get_output_tensor(0).data

    prec = compiled.get_property("INFERENCE_PRECISION_HINT")
    return run, f"runs {getattr(prec, 'to_string', lambda: str(prec))()}"


def _make_runner(job: dict):
    """-> (open(size) -> (run(x), note)), close()) for the job's target."""
    kind, threads, art = job["kind"], job["threads"], job.get("artifact")
    if kind == "eager":
        import torch

        torch.set_num_threads(threads)
        model = _factory(job["spec"])

        def run(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return lambda size: (run, None), lambda: None
    if kind in ("ort", "ort-int8"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        sess = ort.InferenceSession(art, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda size: ((lambda x: sess.run(None, {name: x})[0]), None), lambda: None
    if kind.startswith("ov"):
        return lambda size: _ov_compile(art, size, threads), lambda: None
    if kind.startswith("ours"):
        import mrdeploy.runtime as rt

        runner = rt.load(art, threads=threads)

        def open_size(size):
            d = runner.select(1, size, size)
            e = runner.manifest.entry(d.profile.name)
            return runner, f"{d.profile.name} {e.backend} {e.precision}"

        return open_size, runner.close
    raise ValueError(f"unknown target kind {kind!r}")


def worker(job: dict) -> dict:
    data = Path(job["data"])
    open_size, close = _make_runner(job)
    out = {}
    for size in job["sizes"]:
        x_all = np.load(data / f"eval_{size}.npy")
        x = np.ascontiguousarray(x_all[:1])
        run, note = open_size(size)
        for _ in range(job["warmup"]):
            run(x)
        times = []
        stop = time.perf_counter() + job["budget"]  # slow targets (eager under load) stop early, >= 5 calls
        for i in range(job["calls"]):
            t0 = time.perf_counter()
            run(x)
            times.append((time.perf_counter() - t0) * 1e3)
            if i + 1 >= min(5, job["calls"]) and t0 > stop:
                break
        row = {"ms": statistics.median(times), "calls": len(times), "note": note}
        if job["eval"]:
            def top1(batch, run=run):
                return [int(np.asarray(run(np.ascontiguousarray(batch[i:i + 1]))).reshape(-1).argmax())
                        for i in range(len(batch))]

            row["top1"] = top1(x_all)
            if job["kind"] == "eager":  # the stable crops: FP32's class survives one grey level of noise
                rng = np.random.default_rng(0)
                span = (x_all.max(axis=(1, 2, 3)) - x_all.min(axis=(1, 2, 3)))[:, None, None, None] / 255
                same = [np.asarray(top1((x_all + rng.standard_normal(x_all.shape) * span).astype(np.float32)))
                        == row["top1"] for _ in range(2)]
                row["stable"] = np.logical_and(*same).tolist()
        out[str(size)] = row
        del run
    close()
    return out


# ------------------------------------------------------------------------------------------ prepare


def _export(key: str, spec: dict, path: Path, exporter: str) -> Path:
    if "example" in spec:
        from examples.zoo import export_example

        return export_example(spec["example"], path, validate=False, exporter=exporter)
    import mrdeploy

    mrdeploy.export(str(ROOT / spec["factory"]), (1, 3, 224, 224), path, model_args=spec.get("model_args"),
                    divisor=spec["divisor"], min_size=spec["min_size"], max_size=spec["max_size"], mean=HALF, std=HALF,
                    task="classification", validate=False, name=key, exporter=exporter)
    return path


def _plain_ort_int8(src: Path, calib: np.ndarray, out: Path) -> Path:
    """quant_pre_process + quantize_static as ONNX Runtime's documentation shows it."""
    import contextlib
    import io

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    src, out = Path(src).resolve(), Path(out).resolve()
    pre = out.with_suffix(".pre.onnx")
    cwd = os.getcwd()
    os.chdir(out.parent)  # quant_pre_process leaves temporary files in the working directory
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                quant_pre_process(str(src), str(pre))
            except Exception:  # noqa: BLE001 - "Incomplete symbolic shape inference" on dynamic Resize sizes:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # the option ORT's docs give
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        os.chdir(cwd)
    return out


def _nncf_int8(src: Path, calib: np.ndarray, out: Path, transformer: bool) -> Path:
    """nncf.quantize on the OpenVINO model read from the ONNX export; saved as IR."""
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(src))
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its progress bars
        q = nncf.quantize(model, nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]),
                          subset_size=len(calib), **kwargs)
    ov.save_model(q, str(out))
    return out


def _parse_ours(text: str, max_drop: float | None) -> list[tuple[str, str, float | None]]:
    """``B:P`` or ``B:P@D`` items -> (backend, precision, max drop: D, else --max-drop)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        head, at, drop = item.partition("@")
        b, sep, p = head.partition(":")
        try:
            d = float(drop) if at else max_drop
        except ValueError:
            d = "bad"
        if not sep or not b or not p or d == "bad":
            raise SystemExit(f"--ours: expected BACKEND:PRECISION or BACKEND:PRECISION@MAXDROP items, got {item!r}")
        out.append((b, p, d))
    return out


def _ours_name(b: str, p: str, d: float | None) -> str:
    return f"ours:{b}:{p}" + ("" if d is None else f"@{d:g}")


def prepare(key: str, args, work: Path, say, notes: list[str]) -> tuple[dict, dict]:
    """Export, quantize and build every target's artifact; returns (spec, {target: artifact or None})."""
    from examples.real import photos

    spec = dict(MODELS[key])
    if "example" in spec:
        from examples.zoo import get_spec

        ex = get_spec(spec["example"])
        spec.update(mean=ex.mean, std=ex.std, divisor=ex.divisor)
    mean, std = spec.get("mean", HALF), spec.get("std", HALF)
    d = work / key
    d.mkdir(parents=True, exist_ok=True)
    for s in args.sizes:
        if s % spec["divisor"]:
            raise SystemExit(f"{key}: size {s} is not a multiple of the model's divisor {spec['divisor']}")
        np.save(d / f"eval_{s}.npy", photos.batch("eval", args.eval, (s, s), mean, std))
    calib_dir = photos.write_folder(d / "calib", "calib", args.calib)
    budgets = any(drop is not None for _, _, drop in args.ours)
    held_dir = photos.write_folder(d / "heldout", "calib", args.heldout, seed=1) if budgets else None
    calib = photos.batch("calib", args.calib, (args.calib_size, args.calib_size), mean, std)
    say(f"{key}: exporting")
    stage = {}
    t0 = time.perf_counter()
    src = _export(key, spec, d / f"{key}.onnx", args.exporter)
    stage["export"] = time.perf_counter() - t0
    arts: dict[str, str | None] = {"eager": None, "ort": str(src), "ov": str(src)}
    if {"ort-int8", "ov-qdq"} & set(args.peers):
        say(f"{key}: plain ORT quantize_static")
        t0 = time.perf_counter()
        qdq = _plain_ort_int8(src, calib, d / f"{key}.ort_int8.onnx")
        stage["ort-int8"] = time.perf_counter() - t0
        arts["ort-int8"] = arts["ov-qdq"] = str(qdq)
    if "ov-nncf" in args.peers:
        say(f"{key}: nncf.quantize")
        t0 = time.perf_counter()
        arts["ov-nncf"] = str(_nncf_int8(src, calib, d / f"{key}.nncf.xml", bool(spec.get("transformer"))))
        stage["ov-nncf"] = time.perf_counter() - t0
    arts = {k: arts[k] for k in PEERS if k in args.peers and k in arts}
    from mrdeploy.errors import MrdeployError
    from mrdeploy.exporter.build import build_bundle

    for b, p, drop in args.ours:
        name = _ours_name(b, p, drop)
        bundle = d / (name.replace(":", "_").replace("@", "_d") + ".bundle")
        say(f"{key}: building bundle {b} {p}" + ("" if drop is None else f" --max-drop {drop:g}"))
        t0 = time.perf_counter()
        try:
            held = drop is not None and p in ("int8", "auto", "bf16", "fp16")  # what --max-drop applies to
            budget = dict(max_drop=drop, heldout_data=held_dir) if held else {}
            build_bundle(src, bundle, [f"s{s}={s}" for s in args.sizes], backend=b, precision=p,
                         calib_data=calib_dir, calib_samples=args.calib, threads=args.threads, quiet=True, force=True,
                         **budget)
        except (MrdeployError, NotImplementedError, ImportError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            notes.append(f"{key}: skipped ours {name[5:]}: the installed mrdeploy refuses it ({first})")
            continue
        stage[name] = time.perf_counter() - t0
        arts[name] = str(bundle)
    spec["data"] = str(d)
    spec["prepare_s"] = {k: round(v, 1) for k, v in stage.items()}
    return spec, arts


# ----------------------------------------------------------------------------------------- measure


def label(target: str) -> str:
    if target.startswith("ours:"):
        _, b, p = target.split(":")
        p, at, drop = p.partition("@")
        return f"ours {b} {p}" + (f" max-drop {drop}" if at else "")
    return PEERS[target]


def spawn(job: dict, work: Path) -> dict:
    """Run one worker process; returns its result or {"error": ...}."""
    jf = work / "job.json"
    jf.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(jf)], capture_output=True,
                       text=True, cwd=ROOT, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {p.returncode}: {tail}"}
    return json.loads(lines[-1][len("RESULT "):])


def measure(key: str, spec: dict, arts: dict, args, work: Path, say) -> dict:
    targets = list(arts)
    t_start = time.perf_counter()
    rounds: dict[str, list[dict]] = {t: [] for t in targets}
    first: dict[str, dict] = {}
    for r in range(args.rounds):
        order = targets[r % len(targets):] + targets[: r % len(targets)]
        sizes = args.sizes if r % 2 == 0 else args.sizes[::-1]
        for i, t in enumerate(order):
            say(f"{key}: round {r + 1}/{args.rounds}, target {i + 1}/{len(order)} ({label(t)})")
            job = dict(kind=t.split(":")[0] if t.startswith("ours") else t, spec=spec, artifact=arts[t],
                       data=spec["data"], sizes=sizes, threads=args.threads, calls=args.calls, warmup=args.warmup,
                       budget=args.budget,
                       eval=r == 0)
            res = spawn(job, work)
            rounds[t].append(res)
            if r == 0:
                first[t] = res
    rows = []
    ref = first.get("eager", {})
    for s in args.sizes:
        k = str(s)
        for t in targets:
            ok = [res[k]["ms"] for res in rounds[t] if "error" not in res]
            calls = [res[k]["calls"] for res in rounds[t] if "error" not in res]
            err = next((res["error"] for res in rounds[t] if "error" in res), None)
            f = first[t].get(k, {}) if "error" not in first[t] else {}
            agree = stable_agree = None
            if "top1" in f and k in ref and "top1" in ref.get(k, {}):
                hits = np.asarray(f["top1"]) == np.asarray(ref[k]["top1"])
                agree = float(np.mean(hits))
                stable = np.asarray(ref[k].get("stable", [True] * len(hits)))
                stable_agree = float(np.mean(hits[stable])) if stable.any() else None
            rows.append({"size": s, "target": t, "label": label(t), "ms": statistics.median(ok) if ok else None,
                         "round_ms": ok, "calls": calls, "noise": [min(ok), max(ok)] if ok else None, "top1_agreement": agree,
                         "stable_agreement": stable_agree, "stable_crops": int(np.sum(ref.get(k, {}).get("stable", []))),
                         "note": f.get("note") if not (err and ok) else f"{len(rounds[t]) - len(ok)} round(s) failed: {err}",
                         "error": err if not ok else None})
    for s in args.sizes:
        here = [r for r in rows if r["size"] == s]
        eager = next((r["ms"] for r in here if r["target"] == "eager"), None)
        peers = [r for r in here if not r["target"].startswith("ours") and r["target"] != "eager" and r["ms"]]
        fastest = min(peers, key=lambda r: r["ms"]) if peers else None
        for r in here:
            r["x_eager"] = eager / r["ms"] if eager and r["ms"] else None
            r["x_fastest_peer"] = fastest["ms"] / r["ms"] if fastest and r["ms"] else None
            r["fastest_peer"] = fastest["target"] if fastest else None
    return {"model": key, "title": spec["title"], "targets": targets, "rows": rows,
            "prepare_s": spec.get("prepare_s", {}), "measure_s": round(time.perf_counter() - t_start, 1)}


def table(res: dict, args) -> str:
    lines = [f"\n{res['title']}: batch 1, {args.threads} thread(s), median of {args.calls} calls per round "
             f"(fewer when they exceed {args.budget:g} s; JSON has the counts), "
             f"{args.rounds} round(s), top-1 agreement on {args.eval} eval crops",
             f"{'size':>7}  {'target':<28} {'ms':>8} {'noise (min-max)':>17} {'x eager':>8} {'x fastest':>10} "
             f"{'top-1':>6} {'stable':>6}  note"]
    for r in res["rows"]:
        fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
        noise = f"{r['noise'][0]:.2f}-{r['noise'][1]:.2f}" if r["noise"] else "-"
        mark = "*" if r["target"] == r.get("fastest_peer") else " "
        note = r["error"] or r["note"] or ""
        lines.append(f"{r['size']:>4}x{r['size']:<3}{mark}{r['label']:<28} {fmt(r['ms'], '8.2f')} {noise:>17} "
                     f"{fmt(r['x_eager'], '7.2f')}x {fmt(r['x_fastest_peer'], '9.2f')}x {fmt(r['top1_agreement'], '6.3f')}"
                     f" {fmt(r.get('stable_agreement'), '6.3f')}"
                     f"  {note}")
    stable = sorted({r["size"]: r.get("stable_crops") for r in res["rows"]}.items())
    lines.append("  ms: median of round medians; x eager: eager ms / ms; x fastest: fastest peer ms / ms "
                 "(* = fastest peer); top-1: agreement with FP32 PyTorch; stable: the same on the crops whose FP32 "
                 "class survives one grey level of noise (" + ", ".join(f"{n} at {s}" for s, n in stable) + ")")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results):
        for t in res["targets"]:
            pts = [(r["size"], r["ms"]) for r in res["rows"] if r["target"] == t and r["ms"]]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", linestyle="-" if t.startswith("ours") else "--", label=label(t))
        ax.set_title(res["title"], fontsize=9)
        ax.set_xlabel("input size (square, px)")
        ax.set_ylabel("latency, ms (batch 1)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine(threads: int) -> dict:
    from mrdeploy.bench import machine_info

    info = machine_info(torch_used=True)
    from importlib.metadata import PackageNotFoundError, version

    for mod in ("openvino", "nncf"):
        try:
            info["versions"][mod] = version(mod)
        except PackageNotFoundError:  # not installed: its targets fail with the reason
            pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    info["isa"] = [f for f in ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f" {f}" in flags]
    info["threads"] = threads
    return info


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--models", help=f"comma-separated, of {','.join(MODELS)} (default lite1,lite2,cnn,vit)")
    ap.add_argument("--sizes", help="comma-separated square sizes, one static profile each (default 160,224,288)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"peer targets (default {','.join(PEERS)})")
    ap.add_argument("--ours", default=DEFAULT_OURS,
                    help=f"our bundles as BACKEND:PRECISION, or BACKEND:PRECISION@MAXDROP for a budget (default {DEFAULT_OURS})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--calls", type=int, help="timed calls per size per round (median taken)")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--budget", type=float, default=15.0,
                    help="seconds of timed calls per size per round after which a slow target stops (>= 5 calls)")
    ap.add_argument("--calib", type=int, help="calibration crops (default 30)")
    ap.add_argument("--max-drop", type=float, help="--max-drop for our int8/auto/bf16/fp16 bundles without @MAXDROP (default: none)")
    ap.add_argument("--heldout", type=int, default=40, help="held-out crops for --max-drop (default 40)")
    ap.add_argument("--calib-size", type=int, help="the size peers calibrate at (default: the middle size)")
    ap.add_argument("--eval", type=int, help="evaluation crops per size for top-1 agreement (default 50)")
    ap.add_argument("--out", type=Path, default=Path("bench_peers_out"), help="directory for peers.json/peers.png")
    ap.add_argument("--work", type=Path, help="where artifacts go (default: a temporary directory, removed)")
    ap.add_argument("--exporter", default="auto", help="mrdeploy.export's exporter: auto (default), dynamo, torchscript")
    ap.add_argument("--quick", action="store_true", help="smoke run: cnn at 96, 1 round, few calls, few crops")
    args = ap.parse_args(argv)
    if args.worker:
        res = worker(json.loads(args.worker.read_text()))
        print("RESULT " + json.dumps(res), flush=True)
        return res

    q = args.quick
    args.models = (args.models or ("cnn" if q else "lite1,lite2,cnn,vit")).split(",")
    args.sizes = [int(s) for s in (args.sizes or ("96" if q else "160,224,288")).split(",")]
    for k, full, quick in (("rounds", 3, 1), ("calls", 60, 5), ("warmup", 10, 2), ("calib", 30, 8), ("eval", 50, 8)):
        if getattr(args, k) is None:
            setattr(args, k, quick if q else full)
    args.calib_size = args.calib_size or sorted(args.sizes)[len(args.sizes) // 2]
    args.peers = [p for p in args.peers.split(",") if p]
    bad = [m for m in args.models if m not in MODELS] + [p for p in args.peers if p not in PEERS]
    if bad:
        raise SystemExit(f"unknown model/peer {bad}; models: {', '.join(MODELS)}; peers: {', '.join(PEERS)}")
    if "eager" not in args.peers:
        args.peers.insert(0, "eager")  # the reference for agreement and ratios
    args.ours = _parse_ours(args.ours, args.max_drop)
    say = _progress(sys.stderr.isatty())
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")

    tmp = None
    work = args.work or Path(tmp := tempfile.mkdtemp(prefix="bench_peers."))
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine(args.threads)
    print(f"{info['cpu']}, {info['cores']} cores ({', '.join(info['isa']) or 'no VNNI/BF16/AMX'}), "
          f"{info['system']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"models {','.join(args.models)}; sizes {args.sizes}; {args.threads} threads; {args.rounds} rounds x "
          f"{args.calls} calls; peers calibrated at {args.calib_size} on {args.calib} crops; {args.eval} eval crops")
    results, notes = [], []
    t0 = time.perf_counter()
    for key in args.models:
        spec, arts = prepare(key, args, work, say, notes)
        for n in notes:
            if n.startswith(f"{key}:"):
                say("")
                print(f"note: {n}")
        res = measure(key, spec, arts, args, work, say)
        say("")
        print(table(res, args), flush=True)
        results.append(res)
    out = {"command": "python benchmarks/bench_peers.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": info, "threads": args.threads, "rounds": args.rounds, "calls": args.calls, "warmup": args.warmup,
           "budget_s": args.budget,
           "batch": 1, "sizes": args.sizes, "calib": args.calib, "calib_size": args.calib_size, "eval": args.eval,
           "ours": [_ours_name(*o)[5:] for o in args.ours], "max_drop": args.max_drop, "heldout": args.heldout,
           "notes": notes, "models": results,
           "seconds": round(time.perf_counter() - t0, 1)}
    (args.out / "peers.json").write_text(json.dumps(out, indent=2))
    plot(results, args.out / "peers.png")
    print(f"\nwrote {args.out / 'peers.json'} and {args.out / 'peers.png'} ({out['seconds']:.0f} s)")
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
