"""Markdown tables and PNG figures for parity and bench reports.

The plots take the reports' JSON dictionaries (``ParityReport.to_dict()``, ``BenchReport.to_dict()``),
so a figure can be redrawn from a saved ``parity.json``/``bench.json``. matplotlib is imported lazily,
with the Agg backend (no display needed).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mrdeploy._atomic import atomic_file

# one color per series kind, stable across figures
_COLORS = {
    "pytorch": "#444444",
    "onnx": "#1f77b4",
    "fp32": "#2ca02c",
    "fp16": "#9467bd",
    "int8": "#d62728",
}
_SPAN_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]


def write_report(report, out: str | os.PathLike, stem: str, plot_fn=None) -> dict[str, Path]:
    """``<stem>.json``, ``<stem>.md`` and (with ``plot_fn``) ``<stem>.png`` in ``out``, each written
    atomically; ``report`` has ``to_dict()`` and ``to_markdown(image_name)``. Returns their paths."""
    import json

    from mrdeploy._atomic import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    paths = {"json": write_text_atomic(out / f"{stem}.json", json.dumps(data, indent=2) + "\n")}
    image = None
    if plot_fn is not None:
        paths["png"] = plot_fn(data, out / f"{stem}.png")
        image = f"{stem}.png"
    paths["md"] = write_text_atomic(out / f"{stem}.md", report.to_markdown(image) + "\n")
    return paths


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one char per column ('l' or 'r'), default: all left."""
    headers = [str(h) for h in headers]
    rows = [["" if v is None else str(v) for v in r] for r in rows]
    align = align or "l" * len(headers)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(v: float | None, digits: int = 4) -> str:
    """Compact number for tables: '-' for None, fixed decimals for [0, 1]-ish values, else %g."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if abs(v) >= 1000 or (v != 0 and abs(v) < 10 ** (-digits)):
        return f"{v:.{max(1, digits - 1)}e}"
    return f"{v:.{digits}f}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _series_color(key: str) -> str:
    """pytorch: grey; the dynamic ONNX model: blue; bundle series by precision."""
    first = key.split()[0]
    if first in ("pytorch", "onnx"):
        return _COLORS[first]
    for precision in ("fp32", "fp16", "int8"):
        if precision in key:
            return _COLORS[precision]
    return "#17becf"


def _profile_spans(ax, profiles: Sequence[Mapping], side_of) -> None:
    """Shade each profile's range on the x axis (by the side measure) and mark its opt."""
    for i, p in enumerate(profiles):
        lo, opt, hi = side_of(p["min"]), side_of(p["opt"]), side_of(p["max"])
        color = _SPAN_COLORS[i % len(_SPAN_COLORS)]
        ax.axvspan(lo, hi, color=color, alpha=0.10, lw=0)
        ax.axvline(lo, color=color, lw=0.8, ls=":")
        ax.axvline(hi, color=color, lw=0.8, ls=":")
        ax.axvline(opt, color=color, lw=0.8, ls="--", alpha=0.6)
        ax.text(
            (lo + hi) / 2, 1.0, f"{p['name']}\n{p.get('precision', '')}", transform=ax.get_xaxis_transform(),
            ha="center", va="bottom", fontsize=7, color=color,
        )


def _side(shape: Sequence[int]) -> float:
    return float((shape[-2] * shape[-1]) ** 0.5)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_parity(report: Mapping, path: str | os.PathLike) -> Path:
    """Accuracy (labeled data) or agreement with the reference vs input resolution, one curve per
    model/precision, profile ranges shaded; beside it 1 - cosine vs the reference (log scale)."""
    plt = _pyplot()
    rows = report["rows"]
    labeled = bool(report.get("labeled"))
    seg = report.get("task") == "segmentation"
    metric = "accuracy" if labeled else ("pixel_agreement" if seg else "top1_agreement")
    if report.get("task") not in ("classification", "segmentation"):
        metric = "cosine"
    ylabel = {
        "accuracy": "mIoU" if seg else "top-1 accuracy",
        "pixel_agreement": "pixel agreement with reference",
        "top1_agreement": "top-1 agreement with reference",
        "cosine": "cosine vs reference",
    }[metric]
    curves = _curves(rows, metric)
    errs = _curves(rows, "cosine", transform=lambda c: max(1.0 - c, 1e-9))
    vs = {r["series"]: r.get("reference") for r in rows if r.get("reference")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    panels = ((axes[0], curves, ylabel, False), (axes[1], errs, "1 - cosine vs reference (floor 1e-9)", True))
    for ax, data, ylab, log in panels:
        _profile_spans(ax, report.get("profiles", []), _side)
        # pytorch last and dashed: it is drawn over the ONNX curve it usually equals
        for key in sorted(data, key=lambda k: k.startswith("pytorch")):
            pts = data[key]
            if not pts:
                continue
            style = "--" if key.startswith("pytorch") else "-"
            label = f"{key} vs {vs[key]}" if log and key in vs else key
            for i, run in enumerate(_runs(pts)):  # a bundle line joins the sizes one profile serves
                xs, ys = [p[0] for p in run], [p[1] for p in run]
                ax.plot(xs, ys, style, color=_series_color(key), lw=1.4, label=label if i == 0 else None, alpha=0.9)
            for x, y, m, _ in pts:
                ax.plot([x], [y], m, color=_series_color(key), ms=5)
        refused = sorted({r["side"] for r in rows if r.get("action") == "refused"})
        if refused:
            ax.plot(refused, [0.02] * len(refused), "x", color="#d62728", ms=8, transform=ax.get_xaxis_transform(),
                    label="refused by the policy", clip_on=False)
        ax.set_xlabel("input resolution  sqrt(H*W)  [px]")
        ax.set_ylabel(ylab)
        if log:
            ax.set_yscale("log")
        elif metric != "cosine":
            ax.set_ylim(-0.02, 1.04)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(
        f"{report.get('model', 'model')}: parity vs input resolution "
        f"(data: {report.get('data', '?')}; shaded: profiles; o exact, s padded, ^ resized)",
        fontsize=10, y=1.07,
    )
    return _save(fig, path)


def _runs(pts: Sequence[tuple]) -> list[list[tuple]]:
    """Split points sorted by x into runs of equal group (their last element): a line per run."""
    runs: list[list[tuple]] = []
    for p in pts:
        if runs and runs[-1][-1][-1] == p[-1]:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _curves(rows: Sequence[Mapping], metric: str, transform=None) -> dict[str, list[tuple]]:
    """Series key -> [(side, value, marker, profile)] sorted by side, one point per size (the served
    bundle row wins); profile is None for the PyTorch and ONNX models."""
    marker = {"exact": "o", "pad": "s", "resize": "^"}
    out: dict[str, dict[float, tuple]] = {}
    for r in rows:
        if metric != "accuracy" and r.get("reference") is None:
            continue
        v = r.get(metric)
        if v is None:
            continue
        key = r["series"]
        pts = out.setdefault(key, {})
        served = bool(r.get("served"))
        x = r["side"]
        if x in pts and pts[x][3] and not served:
            continue
        group = r.get("profile") if r.get("target") == "bundle" else None
        pts[x] = (x, transform(v) if transform else v, marker.get(r.get("action") or "exact", "o"), group, served)
    return {k: sorted(((x, y, m, g) for x, y, m, g, _ in v.values()), key=lambda p: p[0]) for k, v in out.items()}


def plot_bench(report: Mapping, path: str | os.PathLike) -> Path:
    """p50 latency (bars: p90) vs input resolution, one curve per backend/precision, profiles shaded;
    beside it the speed-up of the bundle over the dynamic ONNX model and over PyTorch eager."""
    plt = _pyplot()
    rows = report["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    _profile_spans(ax, report.get("profiles", []), _side)
    series: dict[str, list[tuple]] = {}
    for r in rows:
        series.setdefault(r["series"], []).append((r["side"], r["p50_ms"], r["p90_ms"], r.get("profile")))
    for key, pts in series.items():
        pts.sort(key=lambda p: p[0])
        color = _series_color(key)
        for i, run in enumerate(_runs(pts)):  # a bundle line joins the sizes one profile serves
            ax.plot([p[0] for p in run], [p[1] for p in run], "--" if key.startswith("pytorch") else "-",
                    marker="o", ms=4, color=color, label=key if i == 0 else None)
        ax.vlines([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts], color=color, alpha=0.5)
    ax.set_xlabel("input resolution  sqrt(H*W)  [px]")
    ax.set_ylabel("latency p50 [ms] (line to p90)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax = axes[1]
    _profile_spans(ax, report.get("profiles", []), _side)
    for key, label in (("speedup_vs_onnx", "bundle vs dynamic ONNX"), ("speedup_vs_pytorch", "bundle vs PyTorch eager")):
        pts = sorted((s["side"], s[key]) for s in report.get("sizes", []) if s.get(key))
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", ms=4, label=label, color=_COLORS["onnx" if "ONNX" in label else "pytorch"])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    ratio = FuncFormatter(lambda v, _: f"{v:g}x")
    ax.yaxis.set_major_formatter(ratio)
    ax.yaxis.set_minor_formatter(ratio)
    ax.set_xlabel("input resolution  sqrt(H*W)  [px]")
    ax.set_ylabel("speed-up (p50 ratio, >1 = bundle faster)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    threads = report.get("threads")
    fig.suptitle(
        f"{report.get('model', 'model')}: latency vs input resolution ({threads} thread(s), "
        f"{report.get('runs')} runs per size, batch {report.get('batch', 1)})",
        fontsize=10, y=1.07,
    )
    return _save(fig, path)
