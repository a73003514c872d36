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

import numpy as np

from mrdeploy import metrics as M
from mrdeploy._progress import Progress
from mrdeploy.errors import OptionError
from mrdeploy.evaldata import EvalData, default_sizes, parse_sizes, point_label, point_side, served_by
from mrdeploy.parity_report import ParityFailure, ParityReport, ParityRow, Thresholds

__all__ = ["ParityFailure", "ParityReport", "ParityRow", "Thresholds", "default_sizes", "parity"]


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


def _measure(subjects, data, sizes, samples: int, seed: int, policy: str | None, th: Thresholds,
             check_outside: bool) -> ParityReport:
    """Every size through every subject; the report's rows (thresholds not applied yet)."""
    manifest, runner, onnx_ref, torch_ref = subjects.manifest, subjects.runner, subjects.onnx, subjects.torch
    model = manifest.model
    task = model.task
    input_names = [i.name for i in model.inputs] or onnx_ref.input_names
    out_name = (model.outputs[0].name if model.outputs else onnx_ref.output_names[0])
    evaldata = EvalData(data, model, samples=samples, seed=seed)
    points = parse_sizes(sizes, input_names) if sizes else default_sizes(manifest)
    num_classes = len(model.labels) if model.labels else None
    entries = {e.name: e for e in manifest.profiles}
    chunk = max(1, min(min(r.max[0] for r in e.profile.inputs.values()) for e in manifest.profiles))
    bundle_policy = policy or manifest.policy

    report = ParityReport(
        bundle=str(subjects.bundle), model=model.name, task=task, policy=bundle_policy, data=evaldata.name,
        labeled=evaldata.labeled, samples=evaldata.samples, references=subjects.references(),
        profiles=subjects.profiles(),
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
            served_name, action = served_by(runner, point, bundle_policy)
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
    return report


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
    from mrdeploy.references import open_subjects

    t0 = time.perf_counter()
    th = thresholds or Thresholds()
    unknown = [k for k in limits if not hasattr(th, k)]
    if unknown:
        raise OptionError(f"unknown parity threshold(s) {unknown}; expected some of {[c[0] for c in Thresholds.CHECKS]}")
    for k, v in limits.items():
        if v is not None:
            setattr(th, k, float(v))
    with open_subjects(bundle, reference, checkpoint, model_args, threads) as subjects:
        report = _measure(subjects, data, sizes, samples, seed, policy, th, check_outside)
    report.seconds = time.perf_counter() - t0
    _apply_thresholds(report, th)
    if out is not None:
        report.write(out, plot=plot)
    if report.failures and raise_on_failure:
        raise ParityFailure(report.failure_message(), report)
    return report


from mrdeploy import _make_callable  # noqa: E402  (mrdeploy.parity stays callable once imported)

_make_callable(__name__)
