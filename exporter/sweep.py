"""The resolution sweep: PyTorch vs ONNX Runtime on the same random inputs at many sizes.

Sizes: the export size; 0.5x, 0.75x, 1.5x, 2x of it (rounded to the divisor, kept inside the valid
range); one non-square size; without a divisor also an odd and a prime (non-square) size, since
antialiased resampling or a strided op can match on a grid only (:func:`exact_grid` finds that grid,
the exporter records it as the divisor); batch 1 everywhere and batch 3 at the export size. A model that is right
at the export size and wrong elsewhere has a shape baked into its graph: :func:`check` says so.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from mrdeploy._ort import cpu_session
from mrdeploy.errors import ExportError, ToleranceError
from mrdeploy.exporter.shapes import Shape, fmt_shape, round_to
from mrdeploy.metrics import compare as metrics_compare

DEFAULT_ATOL = 1e-4  # fp32: errors are ~1e-6 of the output scale; a baked shape is off by O(1)
DEFAULT_RTOL = 1e-4  # relative to the output's scale (max |reference|)
SCALES = (0.5, 0.75, 1.5, 2.0)


class SweepError(ExportError, ToleranceError):
    """The exported model disagrees with PyTorch at some size; ``report`` holds the whole sweep."""

    def __init__(self, message: str, report: SweepReport):
        super().__init__(message)
        self.report = report


@dataclass
class SweepRow:
    shapes: dict[str, list[int]]  # input name -> NCHW
    label: str  # "export", "0.5x", "non-square", "batch 3", "given"
    max_abs: float = math.nan
    max_rel: float = math.nan  # max abs error / max |reference| (the output's scale)
    cosine: float = math.nan
    scale: float = math.nan
    passed: bool = False
    error: str | None = None  # ONNX Runtime / PyTorch failure or output shape mismatch

    @property
    def size(self) -> str:
        return " / ".join(f"{s[2]}x{s[3]}" for s in self.shapes.values())

    @property
    def batch(self) -> int:
        return next(iter(self.shapes.values()))[0]


@dataclass
class SweepReport:
    rows: list[SweepRow]
    atol: float
    rtol: float
    output_names: list[str] = field(default_factory=list)
    grid: int | None = None  # exact only on multiples of this: recorded as the divisor, rows off it accepted

    def _accepted(self, r: SweepRow) -> bool:
        return r.passed or (self.grid is not None and any(s[2] % self.grid or s[3] % self.grid for s in r.shapes.values()))

    @property
    def passed(self) -> bool:
        return all(self._accepted(r) for r in self.rows)

    @property
    def failures(self) -> list[SweepRow]:
        return [r for r in self.rows if not self._accepted(r)]

    def to_dict(self) -> dict:
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "passed": self.passed,
            "grid": self.grid,
            "outputs": self.output_names,
            "rows": [_json_row(r) for r in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """The sweep as a text table: size | batch | max abs | max rel | cosine | pass."""
        head = ("size", "batch", "max abs", "max rel", "cosine", "pass", "case")
        lines = []
        for r in self.rows:
            verdict = "PASS" if r.passed else ("OFF-GRID" if self._accepted(r) else "FAIL")
            note = r.label if r.error is None else f"{r.label}: {r.error}"
            lines.append(
                (r.size, str(r.batch), _num(r.max_abs), _num(r.max_rel), _cos(r.cosine), verdict, note)
            )
        widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head) - 1)]
        fmt = lambda cols: " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + (f"  {cols[-1]}" if cols[-1] else "")  # noqa: E731
        sep = "-+-".join("-" * w for w in widths)
        return "\n".join([fmt(head), sep, *(fmt(x) for x in lines)])


def _json_row(r: SweepRow) -> dict:
    d = asdict(r)
    for k in ("max_abs", "max_rel", "cosine", "scale"):
        if not math.isfinite(d[k]):
            d[k] = None
    d["size"], d["batch"] = r.size, r.batch
    return d


def _num(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.2e}"


def _cos(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.7f}"


def plan_sizes(
    example: Mapping[str, Shape],
    divisor: Mapping[str, int],
    min_size: Mapping[str, tuple[int, int] | None],
    max_size: Mapping[str, tuple[int, int] | None],
    sizes: Sequence[Mapping[str, tuple[int, int]]] | None = None,
    dynamic: bool = True,
) -> list[tuple[str, dict[str, Shape]]]:
    """The sweep's (label, {input: NCHW}) cases; every input scaled by the same factor."""

    def clamp(name: str, h: int, w: int) -> tuple[int, int]:
        lo, hi, d = min_size[name], max_size[name], divisor[name]
        if lo is not None:
            h, w = max(h, lo[0]), max(w, lo[1])
        if hi is not None:
            h, w = min(h, hi[0]), min(w, hi[1])
        return round_to(h, d) if h % d else h, round_to(w, d) if w % d else w

    def scaled(fh: float, fw: float, batch: int) -> dict[str, Shape]:
        out = {}
        for name, (_, c, h, w) in example.items():
            nh, nw = clamp(name, round_to(h * fh, divisor[name]), round_to(w * fw, divisor[name]))
            out[name] = (batch, c, nh, nw)
        return out

    def off_grid(fh: float, fw: float, kind: str) -> dict[str, Shape]:
        out = {}
        for name, (_, c, h, w) in example.items():
            pick = _next_prime if kind == "prime" else _nearest_odd
            nh, nw = clamp(name, pick(max(3, round(h * fh))), pick(max(3, round(w * fw))))
            out[name] = (1, c, nh, nw)
        return out

    if not dynamic:
        return [("export", dict(example))]
    base = {n: (1, *s[1:]) for n, s in example.items()}
    cases: list[tuple[str, dict[str, Shape]]] = [("export", base)]
    if sizes is not None:
        for given in sizes:
            cases.append(("given", {n: (1, s[1], *given[n]) for n, s in example.items()}))
    else:
        for f in SCALES:
            cases.append((f"{f:g}x", scaled(f, f, 1)))
        cases.append(("non-square", scaled(0.75, 1.25, 1)))
        if all(divisor[n] == 1 for n in example):  # no divisor given: sizes off every grid too
            cases.append(("odd", off_grid(0.7, 0.7, "odd")))
            cases.append(("prime", off_grid(0.9, 1.3, "prime")))
    cases.append(("batch 3", {n: (3, *s[1:]) for n, s in base.items()}))
    seen, unique = set(), []
    for label, shapes in cases:
        key = tuple(sorted(shapes.items()))
        if key not in seen:
            seen.add(key)
            unique.append((label, shapes))
    return unique


def _nearest_odd(v: int) -> int:
    return v if v % 2 else v + 1


def _next_prime(v: int) -> int:
    def prime(n: int) -> bool:
        return n > 1 and all(n % k for k in range(2, int(n**0.5) + 1))

    while not prime(v):
        v += 1
    return v


GRIDS = (2, 4, 8, 16, 32, 64)


def exact_grid(report: SweepReport) -> int | None:
    """When the model matches PyTorch only on a grid: the largest g (a power of two up to 64) that
    divides every side of every passing row (the grid the sweep has evidence for), provided every
    failing row has a side off it. None otherwise (or when a row failed to run at all)."""
    failing = [r for r in report.rows if not r.passed]
    passing = [r for r in report.rows if r.passed]
    if not failing or not passing or any(r.error for r in failing):
        return None

    def on(r: SweepRow, g: int) -> bool:
        return all(s[2] % g == 0 and s[3] % g == 0 for s in r.shapes.values())

    grids = [g for g in GRIDS if all(on(r, g) for r in passing)]
    if not grids or any(on(r, grids[-1]) for r in failing):
        return None
    return grids[-1]


def compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float, float]:
    """(max abs error, max abs error / output scale, cosine similarity, output scale)."""
    max_abs, cosine = metrics_compare(ref, got)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return max_abs, max_abs / max(scale, 1e-12), cosine, scale


def run_sweep(
    torch_model,
    onnx_path,
    cases: list[tuple[str, dict[str, Shape]]],
    output_names: list[str],
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
    threads: int | None = None,
) -> SweepReport:
    """Run every case through PyTorch and ONNX Runtime; one row per case (worst output)."""
    import torch

    from mrdeploy._progress import Progress

    try:
        session = cpu_session(onnx_path, threads)
    except Exception as e:
        raise ExportError(f"ONNX Runtime cannot load the exported model: {str(e).strip()[:400]}") from e
    rng = np.random.default_rng(seed)
    rows = []
    with Progress(len(cases), "sweep") as bar:
        for label, shapes in cases:
            row = SweepRow({n: list(s) for n, s in shapes.items()}, label)
            feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
            try:
                with torch.no_grad():
                    ref = torch_model(*(torch.from_numpy(v) for v in feeds.values()))
                refs = _as_list(ref)
            except Exception as e:
                row.error = f"PyTorch failed: {type(e).__name__}: {str(e).strip()[:160]}"
                rows.append(row)
                bar.update(1, row.size)
                continue
            try:
                outs = session.run(None, feeds)
            except Exception as e:
                row.error = f"ONNX Runtime failed: {_ort_reason(e)}"
                rows.append(row)
                bar.update(1, row.size)
                continue
            _fill_row(row, refs, outs, output_names, atol, rtol)
            rows.append(row)
            bar.update(1, row.size)
    return SweepReport(rows, atol, rtol, list(output_names))


def _fill_row(row: SweepRow, refs, outs, output_names, atol, rtol) -> None:
    if len(refs) != len(outs):
        row.error = f"PyTorch gave {len(refs)} outputs, ONNX {len(outs)}"
        return
    results = []
    for name, r, o in zip(output_names, refs, outs):
        if tuple(r.shape) != tuple(o.shape):
            row.error = f"{name}: ONNX shape {fmt_shape(o.shape)} != PyTorch {fmt_shape(r.shape)}"
            return
        m = compare(r, o)
        results.append((m, bool(m[0] <= atol + rtol * m[3] and np.isfinite(o).all())))
    row.passed = all(ok for _, ok in results)
    worst = max(results, key=lambda x: (not x[1], x[0][1]))[0]  # a failing output first, then largest rel
    row.max_abs, row.max_rel, row.cosine, row.scale = worst


def _as_list(out) -> list[np.ndarray]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out.detach().numpy()]
    if isinstance(out, Mapping):
        out = list(out.values())
    return [t.detach().numpy() for t in out]


def _ort_reason(e: Exception) -> str:
    """ONNX Runtime's message without its "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :" prefix, short."""
    text = " ".join(str(e).split())
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    text = text.replace("Got invalid dimensions for input: ", "invalid dims for input ")
    text = text.split(" Please fix")[0]
    return text[:140] + ("..." if len(text) > 140 else "")


def check(report: SweepReport) -> None:
    """Raise SweepError when any row failed, naming a baked shape when the export size passed."""
    if report.passed:
        return
    export_rows = [r for r in report.rows if r.label == "export"]
    failing = "; ".join(_describe(r) for r in report.failures)
    if export_rows and export_rows[0].passed:
        size = fmt_size(export_rows[0])
        raise SweepError(
            f"the exported model matches PyTorch at the export size {size} but not at other sizes: a shape "
            f"was baked into the graph (a tensor size became a Python int / constant during export). "
            f"Failing: {failing}",
            report,
        )
    raise SweepError(
        f"the exported model disagrees with PyTorch (atol {report.atol:g}, rtol {report.rtol:g}). "
        f"Failing: {failing}",
        report,
    )


def fmt_size(row: SweepRow) -> str:
    return ", ".join(f"{n} {fmt_shape(s)}" for n, s in row.shapes.items()) if len(row.shapes) > 1 else fmt_shape(
        next(iter(row.shapes.values()))
    )


def _describe(row: SweepRow) -> str:
    if row.error:
        return f"{fmt_size(row)} ({row.error})"
    return f"{fmt_size(row)} (max abs err {row.max_abs:.3g}, max rel {row.max_rel:.3g}, cosine {row.cosine:.6f})"
