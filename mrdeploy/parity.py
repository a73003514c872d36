"""Accuracy parity of a bundle per input resolution: ``mrdeploy parity`` and ``mrdeploy.parity(...)``.

The same inputs go through the PyTorch model (when given), the dynamic ONNX model (the bundle's source
``model.onnx`` or another ``.onnx``) and the bundle, at each size. At a size, the bundle is measured
as the Runner serves it (its choice of profile and, outside every profile, its policy: pad / resize),
and every other profile whose range contains the size is run too, so overlapping profiles are all
checked. Each bundle row is compared with the ONNX model, the ONNX row with the PyTorch model.

Default sizes: every profile's min, opt and max, a size between neighbouring profiles, one non-square
size, and one below and one above all profiles (where the model's valid range allows).

Thresholds gate the result (``ParityFailure``). They apply to the ONNX row and to bundle rows that
run a profile at an exact size; rows served by padding or resizing are reported, and gated only
with ``check_outside=True``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mrdeploy import metrics as M
from mrdeploy._progress import Progress
from mrdeploy.errors import InputError, MrdeployError
from mrdeploy.evaldata import EvalData, SizePoint, parse_sizes, point_label, point_side
from mrdeploy.runtime.manifest import Manifest


class ParityFailure(MrdeployError):
    """The bundle (or the ONNX model) broke a parity threshold; ``.report`` has every number."""

    def __init__(self, message: str, report: ParityReport):
        super().__init__(message)
        self.report = report


@dataclass
class Thresholds:
    """Limits a parity run must meet; None = not checked.

    ``max_top1_drop`` / ``max_miou_drop``: with labeled data, reference accuracy (mIoU) minus the
    candidate's; without labels, 1 - top-1 agreement (1 - mIoU agreement), an upper bound of the drop.
    """

    min_cosine: float | None = None
    max_abs_error: float | None = None
    max_top1_drop: float | None = None
    min_top1_agreement: float | None = None
    min_pixel_agreement: float | None = None
    min_miou_agreement: float | None = None
    max_miou_drop: float | None = None

    # (threshold field, row field, "min"|"max", shown name, task it applies to or None for all)
    CHECKS = (
        ("min_cosine", "cosine", "min", "cosine", None),
        ("max_abs_error", "max_abs", "max", "max abs error", None),
        ("max_top1_drop", "drop", "max", "top-1 drop", "classification"),
        ("min_top1_agreement", "top1_agreement", "min", "top-1 agreement", "classification"),
        ("min_pixel_agreement", "pixel_agreement", "min", "pixel agreement", "segmentation"),
        ("min_miou_agreement", "miou_agreement", "min", "mIoU agreement", "segmentation"),
        ("max_miou_drop", "drop", "max", "mIoU drop", "segmentation"),
    )

    def active(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ParityRow:
    """One model (or bundle profile) at one size, compared with its reference."""

    size: str
    side: float
    point: dict
    target: str  # "pytorch" | "onnx" | "bundle"
    series: str  # plot curve: "pytorch fp32", "onnx fp32", "bundle int8", ...
    profile: str | None = None
    backend: str | None = None
    precision: str | None = None
    action: str | None = None  # bundle rows: "exact" | "pad" | "resize"
    served: bool = False  # the Runner's own choice at this size
    in_profile: bool = True  # the size lies inside some profile's range
    reference: str | None = None  # what it is compared with: "pytorch" | "onnx" | None
    samples: int = 0
    max_abs: float | None = None
    mean_abs: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    pixel_agreement: float | None = None
    miou_agreement: float | None = None
    accuracy: float | None = None  # top-1 accuracy or mIoU on labeled data
    reference_accuracy: float | None = None
    drop: float | None = None
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.target == "bundle" and self.profile is None:
            return "bundle: refused by the policy"
        if self.target == "bundle":
            return f"bundle {self.profile} ({self.precision}, {self.action})"
        return self.series

    @property
    def gated(self) -> bool:
        return self.reference is not None


@dataclass
class ParityReport:
    bundle: str
    model: str
    task: str
    policy: str
    data: str
    labeled: bool
    samples: int
    references: dict  # {"onnx": path, "pytorch": spec | None, "checkpoint": path | None}
    profiles: list[dict]
    sizes: list[str]
    rows: list[ParityRow]
    thresholds: dict
    check_outside: bool = False
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        for r, row in zip(d["rows"], self.rows):
            r["name"] = row.name
        return d

    def summary_rows(self) -> list[dict]:
        """Per size: accuracy (or agreement) of pytorch, onnx and the served bundle row, and the served
        row's cosine vs ONNX: the short table for READMEs."""
        out = []
        for size in self.sizes:
            rows = [r for r in self.rows if r.size == size]
            by = {r.target: r for r in rows if r.target != "bundle"}
            served = next((r for r in rows if r.target == "bundle" and (r.served or r.profile is None)), None)
            out.append({"size": size, "pytorch": by.get("pytorch"), "onnx": by.get("onnx"), "bundle": served})
        return out

    def to_markdown(self, plot: str | None = "parity.png") -> str:
        from mrdeploy.report import fmt, md_table

        seg = self.task == "segmentation"
        acc_name = "mIoU" if seg else "top-1 acc"
        agr_name = "pixel agr" if seg else "top-1 agr"
        lines = [
            f"# Parity: {self.model} ({self.task})",
            "",
            f"- bundle: `{self.bundle}` (policy `{self.policy}`)",
            f"- references: ONNX `{self.references.get('onnx')}`"
            + (f", PyTorch `{self.references['pytorch']}`" if self.references.get("pytorch") else "")
            + (f" with checkpoint `{self.references['checkpoint']}`" if self.references.get("checkpoint") else ""),
            f"- data: {self.data}, {self.samples} samples per size",
            f"- thresholds: {', '.join(f'{k}={v}' for k, v in self.thresholds.items()) or 'none'}"
            + (" (also on padded/resized sizes)" if self.check_outside else ""),
            f"- result: **{'PASS' if self.passed else 'FAIL'}** ({self.seconds:.1f} s)",
            "",
            "## Summary per size",
            "",
        ]
        head = ["size"]
        has_pt = any(r.target == "pytorch" for r in self.rows)
        metric = "accuracy" if self.labeled else ("pixel_agreement" if seg else "top1_agreement")
        if self.labeled:
            head += [f"pytorch {acc_name}"] if has_pt else []
            head += [f"onnx {acc_name}", f"bundle {acc_name}"]
        else:
            head += [f"onnx {agr_name} vs pytorch"] if has_pt else []
            head += [f"bundle {agr_name} vs onnx"]
        head += ["bundle cosine vs onnx", "served by"]
        table = []
        for s in self.summary_rows():
            b, o, p = s["bundle"], s["onnx"], s["pytorch"]
            row = [s["size"]]
            if self.labeled:
                row += [fmt(p.accuracy)] if has_pt else []
                row += [fmt(o.accuracy if o else None), fmt(b.accuracy if b else None)]
            else:
                row += [fmt(getattr(o, metric) if o else None)] if has_pt else []
                row += [fmt(getattr(b, metric) if b else None)]
            row += [fmt(b.cosine, 6) if b else "-", _served_by(b, self.policy)]
            table.append(row)
        lines += [md_table(head, table, "l" + "r" * (len(head) - 2) + "l"), ""]
        if plot:
            lines += [f"![parity vs resolution]({plot})", ""]
        lines += ["## Profiles", ""]
        lines += [
            md_table(
                ["profile", "backend", "precision", "min", "opt", "max"],
                [[p["name"], p["backend"], p["precision"], _hw(p["min"]), _hw(p["opt"]), _hw(p["max"])] for p in self.profiles],
            ),
            "",
            "## Every row",
            "",
        ]
        head = ["size", "model", "vs", "max abs", "mean abs", "cosine", agr_name]
        head += ["mIoU agr"] if seg else []
        head += [acc_name, "drop", "check"] if self.labeled else ["drop", "check"]
        table = []
        for r in self.rows:
            if r.reference is None and r.accuracy is None and r.target != "bundle":
                continue  # an ONNX/PyTorch row with nothing to show (no labels, nothing to compare)
            row = [r.size + ("" if r.in_profile else " (outside)"), r.name, r.reference or "-", fmt(r.max_abs, 6),
                   fmt(r.mean_abs, 6), fmt(r.cosine, 6), fmt(r.pixel_agreement if seg else r.top1_agreement)]
            row += [fmt(r.miou_agreement)] if seg else []
            row += [fmt(r.accuracy)] if self.labeled else []
            row += [fmt(r.drop), "FAIL" if r.failures else ("ok" if r.reference and self._is_gated(r) else "-")]
            table.append(row)
        lines += [md_table(head, table), ""]
        if self.failures:
            lines += ["## Failures", "", *[f"- {f}" for f in self.failures], ""]
        return "\n".join(lines)

    def _is_gated(self, row: ParityRow) -> bool:
        return row.reference is not None and (row.target != "bundle" or row.action == "exact" or self.check_outside)

    def failure_message(self) -> str:
        sizes = sorted({f.split(" ", 1)[0] for f in self.failures}, key=self.sizes.index)
        head = (
            f"parity failed: {len(self.failures)} check(s) at {len(sizes)} size(s) "
            f"({', '.join(sizes)}); thresholds {', '.join(f'{k}={v}' for k, v in self.thresholds.items())}"
        )
        return "\n".join([head, *(f"  {f}" for f in self.failures)])

    def write(self, out: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
        """parity.json, parity.md and (``plot``) parity.png in ``out``; returns their paths."""
        from mrdeploy.report import plot_parity, write_report

        return write_report(self, out, "parity", plot_parity if plot else None)


def _served_by(row: ParityRow | None, policy: str) -> str:
    if row is None:
        return "-"
    if row.profile is None:
        return f"refused by policy '{policy}'"
    return f"{row.profile} ({row.precision}, {row.action})"


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[-2]}x{shape[-1]}"


# ----------------------------------------------------------------------------------------------------
# sizes


def default_sizes(manifest: Manifest) -> list[SizePoint]:
    """Each profile's min, opt and max; between neighbouring profiles; one non-square size; one below
    and one above all profiles (inside the model's valid range). Sorted by area, no duplicates."""
    info = {i.name: i for i in manifest.model.inputs}
    names = list(manifest.profiles[0].profile.inputs)
    profiles = sorted(manifest.profile_list, key=lambda p: p.area("max"))
    points: list[SizePoint] = []

    def add(point: SizePoint) -> None:
        if point not in points:
            points.append(point)

    def snap(v: float, name: str) -> int:
        d = max(1, info[name].divisor if name in info else 1)
        return max(d, int(round(v / d)) * d)

    for p in profiles:
        for which in ("min", "opt", "max"):
            add({n: tuple(getattr(r, which)[-2:]) for n, r in p.inputs.items()})
    for a, b in zip(profiles, profiles[1:]):
        add({n: tuple(snap((a.inputs[n].max[k] + b.inputs[n].min[k]) / 2 if b.inputs[n].min[k] > a.inputs[n].max[k]
                           else (a.inputs[n].opt[k] + b.inputs[n].opt[k]) / 2, n) for k in (-2, -1)) for n in names})
    widest = max(profiles, key=lambda p: sum(r.max[-2] - r.min[-2] + r.max[-1] - r.min[-1] for r in p.inputs.values()))
    rect = {n: (r.min[-2], r.max[-1]) for n, r in widest.inputs.items()}
    if any(h != w for h, w in rect.values()):
        add(rect)
    lo, hi = profiles[0], profiles[-1]
    below, above = {}, {}
    for n in names:
        d = max(1, info[n].divisor if n in info else 1)
        vmin = info[n].min_size if n in info and info[n].min_size else (d, d)
        vmax = info[n].max_size if n in info and info[n].max_size else None
        step = max(d, 8 // d * d)
        below[n] = tuple(max(vmin[k], lo.inputs[n].min[-2 + k] - 2 * step) for k in (0, 1))
        above[n] = tuple(hi.inputs[n].max[-2 + k] + 2 * step for k in (0, 1))
        if vmax is not None:
            above[n] = tuple(min(vmax[k], above[n][k]) for k in (0, 1))
    for extra in (below, above):
        if not any(p.contains({n: (r.min[0], r.min[1], *extra[n]) for n, r in p.inputs.items()}) for p in profiles):
            add({n: tuple(int(v) for v in hw) for n, hw in extra.items()})
    return sorted(points, key=lambda pt: (sum(h * w for h, w in pt.values()), list(pt.values())))


# ----------------------------------------------------------------------------------------------------
# the run


def _compare(row: ParityRow, out: np.ndarray, ref: np.ndarray, task: str, labels, ref_acc: float | None) -> None:
    """Fill ``row``'s metrics for output ``out`` against reference output ``ref``."""
    if out.shape != ref.shape and out.ndim == ref.ndim == 4 and out.shape[:2] == ref.shape[:2]:
        out = M.resize_nearest(out, ref.shape[-2:])  # served at another size (resize policy)
    row.max_abs = M.max_abs_error(out, ref)
    row.mean_abs = M.mean_abs_error(out, ref)
    row.cosine = M.cosine(out, ref)
    if task == "classification":
        row.top1_agreement = M.top1_agreement(out, ref)
        row.drop = (ref_acc - row.accuracy) if (labels is not None and ref_acc is not None) else 1.0 - row.top1_agreement
    elif task == "segmentation":
        row.pixel_agreement = M.pixel_agreement(out, ref)
        row.miou_agreement = M.miou_agreement(out, ref)
        row.drop = (ref_acc - row.accuracy) if (labels is not None and ref_acc is not None) else 1.0 - row.miou_agreement


def _accuracy(out: np.ndarray, labels, task: str, num_classes: int) -> float | None:
    if labels is None:
        return None
    if task == "classification":
        return M.top1_accuracy(out, labels)
    if task == "segmentation":
        if out.shape[-2:] != labels.shape[-2:]:
            out = M.resize_nearest(out, labels.shape[-2:])
        return M.miou(M.class_map(out), labels, num_classes)
    return None


def _batched(fn, feeds: Mapping[str, np.ndarray], chunk: int) -> dict[str, np.ndarray]:
    n = next(iter(feeds.values())).shape[0]
    parts = [fn({k: np.ascontiguousarray(v[i:i + chunk]) for k, v in feeds.items()}) for i in range(0, n, chunk)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _apply_thresholds(report: ParityReport, th: Thresholds) -> None:
    limits = th.active()
    for row in report.rows:
        if not report._is_gated(row):
            continue
        for attr, field_, kind, shown, task in Thresholds.CHECKS:
            if attr not in limits or (task and task != report.task):
                continue
            value = getattr(row, field_)
            if value is None:
                continue
            limit = limits[attr]
            bad = value < limit if kind == "min" else value > limit
            if bad:
                op = "<" if kind == "min" else ">"
                msg = f"{row.size} {row.name} vs {row.reference}: {shown} {value:.6g} {op} {kind} {limit:g}"
                row.failures.append(msg)
                report.failures.append(msg)


def parity(
    bundle: str | os.PathLike,
    reference: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    checkpoint: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    sizes: str | Sequence | None = None,
    *,
    samples: int = 32,
    seed: int = 0,
    threads: int | None = None,
    model_args: Mapping | None = None,
    policy: str | None = None,
    thresholds: Thresholds | None = None,
    check_outside: bool = False,
    out: str | os.PathLike | None = None,
    plot: bool = True,
    raise_on_failure: bool = True,
    **limits: float | None,
) -> ParityReport:
    """Run parity; write ``parity.json/.md/.png`` to ``out`` when given; raise ParityFailure when a
    threshold (``thresholds`` or keyword limits such as ``min_cosine=0.999``) fails.

    ``reference``: a ``.onnx`` path (replaces the bundle's model.onnx as the ONNX reference), a
    ``module:factory`` / ``path.py:factory`` PyTorch model (``checkpoint``, ``model_args``), or a list
    of both. ``data``: "digits", "shapes", an image directory or None (noise).
    """
    from mrdeploy.references import (
        OnnxReference,
        TorchReference,
        quiet_threads,
        reference_label,
        split_references,
    )
    from mrdeploy.runtime import load

    t0 = time.perf_counter()
    th = thresholds or Thresholds()
    unknown = [k for k in limits if not hasattr(th, k)]
    if unknown:
        raise InputError(f"unknown parity threshold(s) {unknown}; expected some of {[c[0] for c in Thresholds.CHECKS]}")
    for k, v in limits.items():
        if v is not None:
            setattr(th, k, float(v))
    bundle = Path(bundle)
    manifest = Manifest.read(bundle)
    model = manifest.model
    task = model.task
    onnx_path, torch_spec = split_references(reference, checkpoint, bundle, manifest.source["artifact"])
    onnx_ref = OnnxReference(onnx_path, threads=threads)
    input_names = [i.name for i in model.inputs] or onnx_ref.input_names
    out_name = (model.outputs[0].name if model.outputs else onnx_ref.output_names[0])
    torch_ref = None
    if torch_spec is not None:
        torch_ref = TorchReference(torch_spec, onnx_ref.input_names, onnx_ref.output_names,
                                   checkpoint=checkpoint, model_args=model_args, threads=threads)
    runner = load(bundle, threads=threads)
    quiet_threads(runner)
    evaldata = EvalData(data, model, samples=samples, seed=seed)
    points = parse_sizes(sizes, input_names) if sizes else default_sizes(manifest)
    num_classes = len(model.labels) if model.labels else None
    entries = {e.name: e for e in manifest.profiles}
    chunk = max(1, min(min(r.max[0] for r in e.profile.inputs.values()) for e in manifest.profiles))
    bundle_policy = policy or manifest.policy

    report = ParityReport(
        bundle=str(bundle), model=model.name, task=task, policy=bundle_policy, data=evaldata.name,
        labeled=evaldata.labeled, samples=evaldata.samples,
        references={"onnx": str(onnx_path), "pytorch": reference_label(torch_spec),
                    "checkpoint": str(checkpoint) if checkpoint else None},
        profiles=[{"name": e.name, "backend": e.backend, "precision": e.precision,
                   **{k: list(next(iter(e.profile.inputs.values())).to_dict()[k]) for k in ("min", "opt", "max")}}
                  for e in manifest.profiles],
        sizes=[point_label(p) for p in points], rows=[], thresholds=th.active(), check_outside=check_outside,
    )
    with Progress(len(points), "parity") as bar:
        for point in points:
            label, side = point_label(point), point_side(point)
            bar.update(0, note=label)
            feeds, labels = evaldata.batch(point)
            n = next(iter(feeds.values())).shape[0]
            nc = num_classes

            base = dict(size=label, side=side, point={k: list(v) for k, v in point.items()}, samples=n)

            pt_out = None
            if torch_ref is not None:
                t = time.perf_counter()
                pt_out = torch_ref.run(feeds)[out_name]
                nc = nc or (pt_out.shape[1] if pt_out.ndim > 1 else None)
                r = ParityRow(**base, target="pytorch", series="pytorch fp32", accuracy=_accuracy(pt_out, labels, task, nc or 0))
                r.seconds = time.perf_counter() - t
                report.rows.append(r)
            t = time.perf_counter()
            onnx_out = onnx_ref.run(feeds)[out_name]
            nc = nc or (onnx_out.shape[1] if onnx_out.ndim > 1 else 0)
            r = ParityRow(**base, target="onnx", series="onnx fp32", accuracy=_accuracy(onnx_out, labels, task, nc))
            if pt_out is not None:
                r.reference = "pytorch"
                _compare(r, onnx_out, pt_out, task, labels, report.rows[-1].accuracy)
            r.seconds = time.perf_counter() - t
            report.rows.append(r)
            onnx_acc = r.accuracy

            shapes = {k: v.shape[:1] + v.shape[1:] for k, v in feeds.items()}
            one = {k: (1, *s[1:]) for k, s in shapes.items()}
            inside = [e for e in manifest.profiles if e.profile.contains(one)]
            served_name, action = _decision(runner, point, bundle_policy)
            todo = [(served_name, action, True)] if served_name else []
            if served_name is None:
                report.rows.append(ParityRow(**base, target="bundle", series="bundle", action="refused",
                                             in_profile=False))
            todo += [(e.name, "exact", False) for e in inside if e.name != served_name]
            for name, act, served in todo:
                e = entries[name]
                t = time.perf_counter()
                if served:
                    y = _batched(lambda f: runner.run(f, policy=bundle_policy), feeds, chunk)[out_name]
                else:
                    y = _batched(lambda f, nm=name: runner.run_profile(nm, f), feeds, chunk)[out_name]
                r = ParityRow(**base, target="bundle", series=f"bundle {e.precision}", profile=name, backend=e.backend,
                        precision=e.precision, action=act, served=served, in_profile=bool(inside),
                        reference="onnx", accuracy=_accuracy(y, labels, task, nc))
                _compare(r, y, onnx_out, task, labels, onnx_acc)
                r.seconds = time.perf_counter() - t
                report.rows.append(r)
            bar.update(1, note=label)
    report.seconds = time.perf_counter() - t0
    _apply_thresholds(report, th)
    if out is not None:
        report.write(out, plot=plot)
    if report.failures and raise_on_failure:
        raise ParityFailure(report.failure_message(), report)
    return report


def _decision(runner, point: SizePoint, policy: str) -> tuple[str | None, str]:
    """The Runner's choice at a size: (profile name, "exact" | "pad" | "resize"); (None, "error") when
    the policy refuses the size."""
    (h, w) = next(iter(point.values()))
    try:
        if len(point) == 1:
            d = runner.select(1, h, w, policy=policy)
        else:
            d = runner.select({n: (1, *hw) for n, hw in point.items()}, policy=policy)
    except MrdeployError:
        return None, "error"
    name = getattr(d, "profile", None) or getattr(d, "name", None)
    name = getattr(name, "name", name)
    return name, getattr(d, "action", "exact")


from mrdeploy import _make_callable  # noqa: E402  (mrdeploy.parity stays callable once imported)

_make_callable(__name__)
