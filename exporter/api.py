"""``export()``: torch model -> one self-contained, optimized, validated ONNX file with mrdeploy metadata."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrdeploy._atomic import atomic_file, check_output, write_text_atomic
from mrdeploy._progress import Progress
from mrdeploy.errors import ExportError
from mrdeploy.exporter.loading import load_model
from mrdeploy.exporter.metadata import build_model_info, write_metadata
from mrdeploy.exporter.shapes import as_hw, check_size, fmt_shape, normalize_example, parse_sizes, per_input
from mrdeploy.exporter.sweep import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    SweepError,
    SweepReport,
    check,
    exact_grid,
    plan_sizes,
    run_sweep,
)
from mrdeploy.runtime.modelinfo import ModelInfo, OutputInfo
from mrdeploy.runtime.sizes import size_point

MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit for one self-contained .onnx


@dataclass
class ExportResult:
    path: Path
    exporter: str  # "dynamo" | "torchscript"
    fallback_reason: str | None  # why the dynamo exporter was not used
    optimizer: str | None  # "onnxslim" | None
    nodes_before: int
    nodes_after: int
    model_info: ModelInfo
    opset: int | None
    sweep: SweepReport | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "exporter": self.exporter,
            "fallback_reason": self.fallback_reason,
            "optimizer": self.optimizer,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "opset": self.opset,
            "model": self.model_info.to_dict(),
            "sweep": self.sweep.to_dict() if self.sweep else None,
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
        }


def _read_labels(labels) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str | os.PathLike):
        path = Path(labels)
        if not path.is_file():
            raise ExportError(f"labels file {path} does not exist")
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        lines = [ln for ln in lines if ln]
        if not lines:
            raise ExportError(f"labels file {path} is empty: expected one label per line")
        return lines
    return [str(v) for v in labels]


def _default_output_names(n: int, task: str) -> list[str]:
    first = {"classification": "logits", "segmentation": "mask_logits"}.get(task, "output")
    return [first] if n == 1 else [f"{first}{i}" for i in range(n)]


def _outputs(refs, example, output_names, spatial_outputs, task) -> list[OutputInfo]:
    """OutputInfo per output: spatial ones given explicitly, else inferred (rank 4, non-classification)."""
    h_in = max(s[2] for s in example.values())
    infos = []
    for name, ref in zip(output_names, refs):
        if spatial_outputs is not None:
            if isinstance(spatial_outputs, Mapping):
                spatial, stride = name in spatial_outputs, int(spatial_outputs.get(name, 1))
            else:
                spatial, stride = name in set(spatial_outputs), 1
        else:
            spatial = task != "classification" and ref.ndim == 4
            stride = max(1, round(h_in / ref.shape[2])) if spatial else 1
        if spatial and ref.ndim != 4:
            raise ExportError(f"output {name!r} is declared spatial but has shape {fmt_shape(ref.shape)} (rank {ref.ndim})")
        infos.append(OutputInfo(name=name, spatial=spatial, stride=stride))
    return infos


def _settings(example, divisor, min_size, max_size, dynamic):
    names = list(example)
    div = per_input(divisor, names, "divisor")
    lo = {n: as_hw(v, "min size") for n, v in per_input(min_size, names, "min size").items()}
    hi = {n: as_hw(v, "max size") for n, v in per_input(max_size, names, "max size").items()}
    for n in names:
        if not isinstance(div[n], int) or div[n] < 1:
            raise ExportError(f"divisor of input {n!r} must be a positive int, got {div[n]!r}")
        if not dynamic:  # a static model is valid at its export size only
            lo[n] = lo[n] or tuple(example[n][2:])
            hi[n] = hi[n] or tuple(example[n][2:])
        for what, v in (("min size", lo[n]), ("max size", hi[n])):
            if v is not None:
                check_size(n, v, div[n], None, None, what)
        if lo[n] and hi[n] and (lo[n][0] > hi[n][0] or lo[n][1] > hi[n][1]):
            raise ExportError(f"min size {fmt_shape(lo[n])} of input {n!r} is above its max size {fmt_shape(hi[n])}")
        check_size(n, tuple(example[n][2:]), div[n], lo[n], hi[n], "example size")
    return div, lo, hi


def export(
    model,
    example_shape,
    output,
    *,
    model_args: Mapping[str, Any] | None = None,
    checkpoint=None,
    dynamic: bool = True,
    min_size=None,
    max_size=None,
    divisor=1,
    mean=None,
    std=None,
    labels=None,
    task: str = "classification",
    name: str | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    spatial_outputs=None,
    output_scale=None,
    opset: int | None = None,
    exporter: str = "auto",
    optimize: bool = True,
    validate: bool = True,
    validate_sizes=None,
    atol: float | None = None,
    rtol: float | None = None,
    report=None,
    seed: int = 0,
    force: bool = False,
) -> ExportResult:
    """Export ``model`` (an nn.Module or ``"pkg.mod:factory"`` / ``"file.py:factory"``) to ``output``.

    ``example_shape`` is NCHW (``(1, 3, 224, 224)`` or ``"1x3x224x224"``) or, for several image inputs,
    a dict ``{input name: shape}`` in forward-argument order. Batch, height and width are dynamic unless
    ``dynamic=False``. ``divisor``/``min_size``/``max_size``/``mean``/``std`` may be given per input as
    dicts. With ``validate`` the file is checked against PyTorch over a resolution sweep; any failure
    raises (SweepError, an ExportError) and nothing is left at ``output``; with ``exporter="auto"`` a
    dynamo graph that fails the sweep is exported again with TorchScript. ``report`` writes the result as
    JSON (also when the sweep fails). Each spatial output's size rule (scale such as 2, 1 or 1/16, and
    floor or round-up) is inferred by running the model at a few more sizes, or given in
    ``output_scale`` ({output name: 2 | "1/16"}); the runtime crops padded outputs back by it.
    """
    check_output(output, "onnx", force, directory=False)  # before any work; replaces only an ONNX model
    start = time.perf_counter()
    default = input_names[0] if input_names and len(input_names) == 1 else "input"
    example = normalize_example(example_shape, default)
    if input_names is not None:
        if len(input_names) != len(example):
            raise ExportError(f"{len(input_names)} input name(s) {list(input_names)} for {len(example)} example shape(s)")
        example = dict(zip(input_names, example.values()))
    div, lo, hi = _settings(example, divisor, min_size, max_size, dynamic)
    sizes = _validate_sizes(validate_sizes, example, div, lo, hi)
    names = list(example)
    means = per_input(mean, names, "mean")
    stds = per_input(std, names, "std")
    label_list = _read_labels(labels)

    torch_model = load_model(model, model_args, checkpoint)
    tensors, refs, keys = _probe(torch_model, example, seed)
    out_names = list(output_names) if output_names else (keys or _default_output_names(len(refs), task))
    if len(out_names) != len(refs):
        raise ExportError(f"{len(out_names)} output name(s) {out_names} for a model with {len(refs)} output(s)")
    out_infos = _outputs(refs, example, out_names, spatial_outputs, task)
    if label_list and task == "classification" and refs[0].ndim == 2 and refs[0].shape[1] != len(label_list):
        raise ExportError(f"{len(label_list)} labels for a classifier with {refs[0].shape[1]} classes")

    out_infos, rule_notes = _output_rules(torch_model, tensors, refs, out_infos, output_scale, div, lo, hi, seed)
    info = build_model_info(
        name or _default_name(model), task, example, div, lo, hi, means, stds, out_infos, label_list
    )
    cases = plan_sizes(example, div, lo, hi, sizes, dynamic) if validate else []
    tol = (DEFAULT_ATOL if atol is None else atol, DEFAULT_RTOL if rtol is None else rtol)
    spatial = {o.name for o in out_infos if o.spatial}

    with atomic_file(output, "onnx", force) as tmp:
        result, error = _attempt(torch_model, tensors, out_names, spatial, dynamic, exporter, opset, optimize,
                                 info, output, tmp, cases, tol, seed)
        if error is not None and exporter == "auto" and result.exporter == "dynamo":
            # dynamo's graph is wrong somewhere: a failed sweep is a reason to fall back, like a failed export
            try:
                retry, retry_error = _attempt(torch_model, tensors, out_names, spatial, dynamic, "torchscript",
                                              opset, optimize, info, output, tmp, cases, tol, seed)
            except ExportError as e:
                retry, retry_error = None, e
            if retry is not None and retry_error is None:
                retry.fallback_reason = f"dynamo's graph failed the sweep: {error}"
                result, error = retry, None
            else:
                error = SweepError(f"{error} [the TorchScript fallback failed too: {retry_error}]", error.report)
        elif error is not None and result.fallback_reason:
            error = SweepError(
                f"{error} [exported with torchscript; dynamo was not used: {result.fallback_reason}]", error.report
            )
        result.notes.extend(rule_notes)
        result.seconds = time.perf_counter() - start
        if error is not None:
            if report is not None:
                _write_report(report, result, error=str(error))
            raise error from None
    if report is not None:
        _write_report(report, result)
    return result


def _attempt(torch_model, tensors, out_names, spatial, dynamic, exporter, opset, optimize, info, output, tmp,
             cases, tol, seed) -> tuple[ExportResult, SweepError | None]:
    """Export with ``exporter``, optimize, write ``info``, save to ``tmp``, run the sweep: (result, error)."""
    import onnx

    from mrdeploy.exporter.onnx_export import export_onnx
    from mrdeploy.exporter.optimize import OptimizeResult, count_nodes
    from mrdeploy.exporter.optimize import optimize as run_optimize

    with Progress(2, "export") as bar:
        bar.update(0, note=f"{exporter} exporter")
        raw = export_onnx(
            torch_model, tensors, out_names, dynamic=dynamic, exporter=exporter, opset=opset,
            spatial_outputs=spatial,
        )
        bar.update(1, note="optimizing" if optimize else "exported")
        if optimize:
            opt = run_optimize(raw.model)
        else:
            n = count_nodes(raw.model)
            opt = OptimizeResult(raw.model, None, n, n)
        bar.update(1, note=f"{opt.nodes_before} -> {opt.nodes_after} nodes")
    proto = opt.model
    write_metadata(proto, info)
    if proto.ByteSize() > MAX_PROTO_BYTES:
        raise ExportError(f"the model is {proto.ByteSize() / 2**30:.1f} GB; one self-contained .onnx holds at most 2 GB")
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    notes = list(raw.warnings) + ([opt.note] if opt.note else [])
    result = ExportResult(
        Path(output), raw.exporter, raw.fallback_reason, opt.tool, opt.nodes_before, opt.nodes_after, info,
        opset_used, notes=notes,
    )
    onnx.save_model(proto, str(tmp), save_as_external_data=False)
    try:
        onnx.checker.check_model(str(tmp))
    except Exception as e:
        raise ExportError(f"the exported ONNX model does not pass onnx.checker: {str(e).strip()[:300]}") from e
    if not cases:
        return result, None
    result.sweep = run_sweep(torch_model, tmp, cases, out_names, tol[0], tol[1], seed)
    try:
        check(result.sweep)
    except SweepError as e:
        grid = exact_grid(result.sweep)
        if grid is None or any(i.divisor != 1 for i in info.inputs):
            return result, e
        if any(t.shape[2] % grid or t.shape[3] % grid for t in tensors.values()):
            return result, e
        # exact on multiples of `grid` only: record it as the divisor, so the runtime pads to it
        from dataclasses import replace

        info = replace(info, inputs=[replace(i, divisor=grid) for i in info.inputs])
        write_metadata(proto, info)
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        result.model_info = info
        result.sweep.grid = grid
        off = ", ".join(_size_text(r) for r in result.sweep.rows if not r.passed)
        result.notes.append(
            f"the model matches PyTorch only at sizes that are multiples of {grid} (it differs at {off}); "
            f"divisor {grid} recorded: the runtime pads other sizes up to it"
        )
    return result, None


def _size_text(row) -> str:
    worst = f" by {row.max_rel:.2g} rel" if row.max_rel == row.max_rel else ""
    return f"{row.size}{worst}"


def _output_rules(torch_model, tensors, refs, infos, output_scale, div, lo, hi, seed):
    """Spatial outputs' size rules: given in ``output_scale`` ({name: 2 | "1/16" | (sh, sw)}), else
    inferred by running the model at a few more sizes (mrdeploy.exporter.spatial)."""
    from dataclasses import replace

    from mrdeploy.exporter.spatial import infer_rules, parse_scale

    given = dict(output_scale or {})
    unknown = [n for n in given if n not in {o.name for o in infos}]
    if unknown:
        raise ExportError(f"output_scale names unknown output(s) {unknown}; outputs: {[o.name for o in infos]}")
    out = []
    for o in infos:
        if o.name in given:
            try:
                scale = parse_scale(given[o.name])
            except (ValueError, ZeroDivisionError, TypeError):
                raise ExportError(
                    f"output_scale of {o.name!r}: expected a ratio such as 2, 0.25 or '1/16', got {given[o.name]!r}"
                ) from None
            stride = max(1, round(1 / min(scale))) if min(scale) < 1 else 1
            o = replace(o, spatial=True, scale=scale, stride=stride,
                        offset=tuple(max(0, round(1 / s) - 1) if s < 1 else 0 for s in scale))
        out.append(o)
    return infer_rules(torch_model, tensors, refs, out, div, lo, hi, seed)


def _probe(torch_model, example, seed: int):
    """Run the model once at the example shape: (input tensors, output tensors, dict keys or None)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors = {n: torch.randn(s, generator=gen) for n, s in example.items()}
    try:
        with torch.no_grad():
            out = torch_model(*tensors.values())
    except Exception as e:
        shapes = ", ".join(f"{n} {fmt_shape(s)}" for n, s in example.items())
        raise ExportError(f"the model's forward failed at the example shape ({shapes}): {type(e).__name__}: {e}") from e
    keys = [str(k) for k in out] if isinstance(out, Mapping) else None
    refs = [out] if isinstance(out, torch.Tensor) else list(out.values() if isinstance(out, Mapping) else out)
    if not refs or not all(isinstance(r, torch.Tensor) for r in refs):
        raise ExportError(f"the model must return a tensor or a tuple/dict of tensors, got {type(out).__name__}")
    return tensors, refs, keys


def _validate_sizes(validate_sizes, example, div, lo, hi) -> list[dict[str, tuple[int, int]]] | None:
    """``"96,160,384x256"`` (every input that size), ``"112/224,128x128/384x256"`` (one per input, in
    order) or ``"small:112+large:224"`` (one per named input): :mod:`mrdeploy.runtime.sizes`."""
    if validate_sizes is None:
        return None
    items = parse_sizes(validate_sizes) if isinstance(validate_sizes, str) else list(validate_sizes)
    names = list(example)
    out = []
    for item in items:
        sizes = size_point(item, names)
        for n, hw in sizes.items():
            check_size(n, hw, div[n], lo[n], hi[n], "validate size")
        out.append(sizes)
    return out


def _default_name(model) -> str:
    if isinstance(model, str):
        return model.rpartition(":")[2]
    return type(model).__name__


def _write_report(path, result: ExportResult, error: str | None = None) -> None:
    d = result.to_dict()
    d["ok"] = error is None
    d["error"] = error
    write_text_atomic(path, json.dumps(d, indent=2) + "\n")
