"""Latency per input resolution: the bundle against the dynamic ONNX model and PyTorch eager, measured
in the same run with the same thread count (``mrdeploy bench``, ``mrdeploy.bench(...)``).

At each size, every target gets ``warmup`` untimed calls, then ``runs`` timed calls interleaved
round-robin (call i starts with target i mod k, so no target always runs first after another's cache
effects). The bundle is timed as an application calls it (``runner.run``: selection, padding and
cropping included).

Interleaving on shared cores is only fair when no library keeps its threads busy-waiting after a call
(ONNX Runtime spins by default, OpenMP in PyTorch too): the spinning threads of one target would steal
the cores from the next. So unless ``spin=True``, every ONNX Runtime session (the bundle's engines and
the dynamic model) runs with ``session.intra_op.allow_spinning=0`` and PyTorch with
``OMP_WAIT_POLICY=PASSIVE`` (set before torch is first imported). Reported: p50/p90/p99/mean latency in ms and throughput in images/s, and the
speed-up of the bundle over the dynamic ONNX model and over PyTorch eager (ratios of p50).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mrdeploy._progress import Progress
from mrdeploy.errors import InputError, MrdeployError
from mrdeploy.evaldata import default_sizes, parse_sizes, point_label, point_side, served_by


@dataclass
class BenchRow:
    size: str
    side: float
    target: str  # "bundle" | "onnx" | "pytorch"
    series: str  # "bundle onnxruntime fp32", "onnx dynamic fp32", "pytorch eager fp32"
    profile: str | None
    backend: str
    precision: str
    action: str | None
    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput: float  # images per second (batch / mean latency)


@dataclass
class BenchReport:
    bundle: str
    model: str
    threads: int
    runs: int
    warmup: int
    batch: int
    spin: bool
    machine: dict
    references: dict
    profiles: list[dict]
    rows: list[BenchRow]
    sizes: list[dict] = field(default_factory=list)  # per size: served profile and the ratios
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self, plot: str | None = "bench.png") -> str:
        from mrdeploy.report import fmt, md_table

        m = self.machine
        has_pt = any(r.target == "pytorch" for r in self.rows)
        lines = [
            f"# Bench: {self.model}",
            "",
            f"- bundle: `{self.bundle}`; dynamic ONNX: `{self.references.get('onnx')}`"
            + (f"; PyTorch: `{self.references['pytorch']}`" if self.references.get("pytorch") else ""),
            f"- machine: {m.get('cpu')} ({m.get('cores')} cores), {m.get('system')}; "
            + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
            f"- {self.threads} thread(s) for every target, batch {self.batch}, {self.warmup} warm-up + "
            f"{self.runs} timed runs per size and target, interleaved"
            + ("" if self.spin else " (thread spin-waiting off in ONNX Runtime and OpenMP)") + f"; {m.get('date')}",
            "",
            "## Latency p50 per size (ms) and speed-up of the bundle",
            "",
        ]
        head = ["size", "served by", "bundle", "onnx dynamic"] + (["pytorch eager"] if has_pt else [])
        head += ["bundle vs onnx"] + (["bundle vs pytorch"] if has_pt else [])
        table = []
        for s in self.sizes:
            by = {r.target: r for r in self.rows if r.size == s["size"]}
            row = [s["size"], f"{s['profile']} ({s['precision']}, {s['action']})", fmt(by["bundle"].p50_ms, 2),
                   fmt(by["onnx"].p50_ms, 2)]
            row += [fmt(by["pytorch"].p50_ms, 2)] if has_pt else []
            row += [f"{s['speedup_vs_onnx']:.2f}x"]
            row += [f"{s['speedup_vs_pytorch']:.2f}x"] if has_pt else []
            table.append(row)
        lines += [md_table(head, table, "ll" + "r" * (len(head) - 2)), ""]
        if plot:
            lines += [f"![latency vs resolution]({plot})", ""]
        lines += ["## Per profile (sizes it serves exactly)", ""]
        prof_rows = []
        for p in self.profiles:
            mine = [s for s in self.sizes if s["profile"] == p["name"] and s["action"] == "exact"]
            if not mine:
                continue
            ratios = [s["speedup_vs_onnx"] for s in mine]
            row = [p["name"], p["precision"], ", ".join(s["size"] for s in mine),
                   f"{min(ratios):.2f}x - {max(ratios):.2f}x"]
            if has_pt:
                pr = [s["speedup_vs_pytorch"] for s in mine]
                row.append(f"{min(pr):.2f}x - {max(pr):.2f}x")
            prof_rows.append(row)
        lines += [md_table(["profile", "precision", "sizes", "vs onnx"] + (["vs pytorch"] if has_pt else []), prof_rows), ""]
        lines += ["## Every measurement", ""]
        lines += [
            md_table(
                ["size", "target", "profile", "p50 ms", "p90 ms", "p99 ms", "mean ms", "images/s"],
                [[r.size, r.series, r.profile or "-", fmt(r.p50_ms, 2), fmt(r.p90_ms, 2), fmt(r.p99_ms, 2),
                  fmt(r.mean_ms, 2), fmt(r.throughput, 1)] for r in self.rows],
                "lllrrrrr",
            ),
            "",
        ]
        return "\n".join(lines)

    def write(self, out: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
        """bench.json, bench.md and (``plot``) bench.png in ``out``."""
        from mrdeploy.report import plot_bench, write_report

        return write_report(self, out, "bench", plot_bench if plot else None)


def machine_info(torch_used: bool = False) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"numpy": np.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch_used:
        import torch

        versions["torch"] = torch.__version__
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def percentile_ms(times: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1e3, q))


def time_interleaved(
    calls: Mapping[str, callable], runs: int, warmup: int
) -> dict[str, list[float]]:
    """Time each ``calls[name]()`` ``runs`` times after ``warmup`` untimed calls, round-robin with a
    rotating start; returns seconds per call for each name."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    k = len(names)
    for i in range(runs):
        for j in range(k):
            name = names[(i + j) % k]
            t = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t)
    return times


def bench(
    bundle: str | os.PathLike,
    sizes: str | Sequence | None = None,
    reference: str | os.PathLike | Sequence | None = None,
    checkpoint: str | os.PathLike | None = None,
    threads: int | None = None,
    runs: int = 50,
    warmup: int = 5,
    *,
    batch: int = 1,
    model_args: Mapping | None = None,
    policy: str | None = None,
    seed: int = 0,
    spin: bool = False,
    out: str | os.PathLike | None = None,
    plot: bool = True,
) -> BenchReport:
    """Measure the bundle, the dynamic ONNX model (the bundle's model.onnx, or ``reference`` .onnx) and
    the PyTorch model (``reference`` module:factory) at each size; write bench.json/.md/.png to ``out``."""
    from mrdeploy.references import open_subjects

    t0 = time.perf_counter()
    if runs < 1 or warmup < 0 or batch < 1:
        raise InputError(f"bench: expected runs >= 1, warmup >= 0, batch >= 1, got runs {runs}, warmup {warmup}, batch {batch}")
    threads = int(threads or os.cpu_count() or 1)
    if threads < 1:
        raise InputError(f"threads: expected >= 1, got {threads}")
    with open_subjects(bundle, reference, checkpoint, model_args, threads, spin=spin) as subjects:
        manifest, runner, onnx_ref, torch_ref = subjects.manifest, subjects.runner, subjects.onnx, subjects.torch
        model = manifest.model
        bundle_policy = policy or manifest.policy
        input_names = [i.name for i in model.inputs] or onnx_ref.input_names
        channels = {i.name: i.channels for i in model.inputs}
        points = parse_sizes(sizes, input_names) if sizes else default_sizes(manifest)
        entries = {e.name: e for e in manifest.profiles}
        report = BenchReport(
            bundle=str(subjects.bundle), model=model.name, threads=threads, runs=runs, warmup=warmup, batch=batch, spin=spin,
            machine=machine_info(torch_ref is not None),
            references=subjects.references(), profiles=subjects.profiles(),
            rows=[],
        )
        rng = np.random.default_rng(seed)
        with Progress(len(points), "bench") as bar:
            for point in points:
                label, side = point_label(point), point_side(point)
                bar.update(0, note=label)
                name, action = served_by(runner, point, bundle_policy)
                if name is None:
                    bar.update(1, note=f"{label} refused by policy {bundle_policy!r}")
                    continue
                feeds = {n: rng.standard_normal((batch, channels.get(n, 3), *point[n]), dtype=np.float32) for n in input_names}
                calls = {
                    "bundle": lambda f=feeds: runner.run(f, policy=bundle_policy),
                    "onnx": lambda f=feeds: onnx_ref.run(f),
                }
                if torch_ref is not None:
                    calls["pytorch"] = lambda f=feeds: torch_ref.run(f)
                try:
                    times = time_interleaved(calls, runs, warmup)
                except MrdeployError as e:
                    raise InputError(f"bench at {label}: {e}") from None
                e = entries[name]
                series = {
                    "bundle": (f"bundle {e.backend} {e.precision}", name, e.backend, e.precision, action),
                    "onnx": ("onnx dynamic fp32", None, "onnxruntime", "fp32", None),
                    "pytorch": ("pytorch eager fp32", None, "pytorch", "fp32", None),
                }
                p50 = {}
                for target, ts in times.items():
                    s, prof, backend, precision, act = series[target]
                    mean = float(np.mean(ts))
                    row = BenchRow(
                        size=label, side=side, target=target, series=s, profile=prof, backend=backend,
                        precision=precision, action=act, batch=batch, runs=len(ts), p50_ms=percentile_ms(ts, 50),
                        p90_ms=percentile_ms(ts, 90), p99_ms=percentile_ms(ts, 99), mean_ms=mean * 1e3,
                        min_ms=float(np.min(ts)) * 1e3, throughput=batch / mean,
                    )
                    report.rows.append(row)
                    p50[target] = row.p50_ms
                report.sizes.append({
                    "size": label, "side": side, "profile": name, "precision": e.precision, "action": action,
                    "speedup_vs_onnx": p50["onnx"] / p50["bundle"],
                    "speedup_vs_pytorch": p50["pytorch"] / p50["bundle"] if "pytorch" in p50 else None,
                })
                bar.update(1, note=label)
    if not report.sizes:
        raise InputError(f"bench: every size was refused by the bundle's policy {bundle_policy!r}")
    report.seconds = time.perf_counter() - t0
    if out is not None:
        report.write(out, plot=plot)
    return report


from mrdeploy import _make_callable  # noqa: E402  (mrdeploy.bench stays callable once imported)

_make_callable(__name__)
