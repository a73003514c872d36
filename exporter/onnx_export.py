"""torch -> ONNX ModelProto: the dynamo exporter with named dynamic dims, TorchScript as the fallback."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from mrdeploy._atomic import run_tempdir
from mrdeploy.errors import ExportError

EXPORTERS = ("auto", "dynamo", "torchscript")
TORCHSCRIPT_DEFAULT_OPSET = 17


@dataclass
class RawExport:
    model: object  # onnx.ModelProto, all weights inline
    exporter: str  # "dynamo" | "torchscript"
    fallback_reason: str | None  # why dynamo was not used (exporter="auto" only)
    warnings: list[str]


def dim_names(input_names: list[str]) -> dict[str, tuple[str, str]]:
    """(height, width) dim names per input: ``height``/``width`` for one input, ``<name>_height`` else."""
    if len(input_names) == 1:
        return {input_names[0]: ("height", "width")}
    return {n: (f"{n}_height", f"{n}_width") for n in input_names}


def _first_line(e: BaseException, limit: int = 400) -> str:
    """The root cause's type and first line (dynamo wraps the real error in a generic ConversionError)."""
    while e.__cause__ is not None and type(e).__name__ in ("ConversionError", "TorchExportError", "OnnxExporterError"):
        e = e.__cause__
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    msg = lines[0] if lines else ""
    return f"{type(e).__name__}: {msg}"[:limit]


@contextlib.contextmanager
def _fd1_to_devnull():
    """C++ code in the TorchScript exporter logs graphs straight to file descriptor 1; hide that."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no real fd 1 (e.g. captured by a test runner)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' chatter (progress lines, warnings about absent torchvision ops)."""
    names = ["torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "torch._export"]
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()), _fd1_to_devnull():
        warnings.simplefilter("always")
        try:
            yield caught
        finally:
            for n, lvl in old.items():
                logging.getLogger(n).setLevel(lvl)


@contextlib.contextmanager
def _no_mha_fastpath():
    """nn.MultiheadAttention / TransformerEncoderLayer in eval mode call the fused
    ``aten::_native_multi_head_attention``, which TorchScript cannot export; the slow path is the same
    math in exportable ops."""
    import torch

    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    old = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(old)


def _export_dynamo(model, args, input_names, output_names, dynamic, opset):
    import onnx
    import torch
    from torch.export import Dim

    kwargs = {}
    if dynamic:
        dims = dim_names(input_names)
        batch = Dim("batch")
        kwargs["dynamic_shapes"] = tuple(
            {0: batch, 2: Dim(dims[n][0]), 3: Dim(dims[n][1])} for n in input_names
        )
    if opset is not None:
        kwargs["opset_version"] = opset
    program = torch.onnx.export(
        model,
        args,
        None,
        dynamo=True,
        input_names=input_names,
        output_names=output_names,
        external_data=False,
        optimize=False,
        verbose=False,
        **kwargs,
    )
    with tempfile.TemporaryDirectory(prefix="mrdeploy-export-", dir=run_tempdir()) as tmp:
        path = Path(tmp) / "model.onnx"
        program.save(str(path), external_data=False)
        return onnx.load(str(path))


def _export_torchscript(model, args, input_names, output_names, dynamic, opset, spatial_outputs):
    import onnx
    import torch

    axes = None
    if dynamic:
        dims = dim_names(input_names)
        axes = {n: {0: "batch", 2: dims[n][0], 3: dims[n][1]} for n in input_names}
        for name in output_names:
            axes[name] = {0: "batch"}
            if name in spatial_outputs:
                axes[name].update({2: f"{name}_height", 3: f"{name}_width"})
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        args,
        buf,
        dynamo=False,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=axes,
        opset_version=opset or TORCHSCRIPT_DEFAULT_OPSET,
        do_constant_folding=True,
    )
    return onnx.load_from_string(buf.getvalue())


def _check_outputs(model_proto, output_names: list[str], which: str) -> None:
    got = [o.name for o in model_proto.graph.output]
    if len(got) != len(output_names):
        raise ExportError(
            f"the {which} export has {len(got)} output(s) {got}, but {len(output_names)} output name(s) "
            f"were given: {output_names}"
        )


def export_onnx(
    model,
    inputs: dict,
    output_names: list[str],
    *,
    dynamic: bool = True,
    exporter: str = "auto",
    opset: int | None = None,
    spatial_outputs: set[str] = frozenset(),
) -> RawExport:
    """Export ``model`` called with ``inputs`` (name -> example tensor, in forward order) to ONNX.

    ``exporter="auto"`` tries dynamo and falls back to TorchScript, recording why.
    """
    import torch

    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r} is not one of {', '.join(EXPORTERS)}")
    input_names = list(inputs)
    args = tuple(inputs.values())
    _check_forward_arity(model, len(args))
    if dynamic and all(a.shape[0] == 1 for a in args):
        # dynamo specializes every size-1 dim (0/1 specialization), so a batch-1 example would fix the
        # batch at 1; trace with the example repeated to batch 2 instead (the graph is the same).
        args = tuple(a.expand(2, *a.shape[1:]).clone() for a in args)
    errors: dict[str, str] = {}
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    for which in order:
        with _quiet() as caught, torch.no_grad():
            try:
                if which == "dynamo":
                    proto = _export_dynamo(model, args, input_names, output_names, dynamic, opset)
                else:
                    with _no_mha_fastpath():
                        proto = _export_torchscript(
                            model, args, input_names, output_names, dynamic, opset, set(spatial_outputs)
                        )
            except ExportError:
                raise
            except Exception as e:
                errors[which] = _first_line(e)
                continue
        if dynamic:
            fixed = _specialized_dims(proto, input_names)
            if fixed:
                errors[which] = (
                    f"{which} fixed dims the model declared dynamic ({fixed}) when traced at "
                    f"{', '.join('x'.join(map(str, a.shape)) for a in args)}: the model turns an input size "
                    "into a Python int (int(x.shape[...]), a size used in Python arithmetic or control flow), "
                    "which bakes a shape into the graph"
                )
                if exporter == "auto" and which == "dynamo":
                    continue
                raise ExportError(errors[which])
        _check_outputs(proto, output_names, which)
        notes = sorted({str(w.message).splitlines()[0][:200] for w in caught if "Tracer" in type(w.message).__name__})
        reason = errors.get("dynamo") if which == "torchscript" and exporter == "auto" else None
        return RawExport(proto, which, reason, notes)
    if len(errors) == 2:
        raise ExportError(
            f"both exporters failed. dynamo: {errors['dynamo']} | torchscript: {errors['torchscript']}"
        )
    ((which, err),) = errors.items()
    raise ExportError(f"the {which} exporter failed: {err}")


def _check_forward_arity(model, n_inputs: int) -> None:
    """A model whose forward cannot take ``n_inputs`` positional tensors gets a clear message."""
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*range(n_inputs))
    except TypeError as e:
        params = [p for p in sig.parameters]
        raise ExportError(
            f"the model's forward({', '.join(params)}) cannot take {n_inputs} input(s): {e}"
        ) from e


def _specialized_dims(model_proto, input_names: list[str]) -> str:
    """Inputs whose batch/height/width came out as fixed numbers, e.g. "input height=32, width=32"."""
    labels = {0: "batch", 2: "height", 3: "width"}
    found = []
    for v in model_proto.graph.input:
        if v.name not in input_names:
            continue
        dims = v.type.tensor_type.shape.dim
        fixed = [f"{labels[i]}={dims[i].dim_value}" for i in labels if i < len(dims) and dims[i].HasField("dim_value")]
        if fixed:
            found.append(f"{v.name} {', '.join(fixed)}")
    return "; ".join(found)
