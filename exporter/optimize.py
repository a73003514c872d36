"""Graph optimization that keeps the dynamic axes: onnxslim (constant folding, fusion, dead code)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass


@dataclass
class OptimizeResult:
    model: object  # onnx.ModelProto
    tool: str | None  # "onnxslim" or None when the model was left as exported
    nodes_before: int
    nodes_after: int
    note: str | None = None  # why the optimized graph was not used, when it was not


def count_nodes(model_proto) -> int:
    """Nodes in the graph, including those in subgraphs (If/Loop bodies)."""

    def walk(graph) -> int:
        n = 0
        for node in graph.node:
            n += 1
            for attr in node.attribute:
                if attr.g is not None and attr.HasField("g"):
                    n += walk(attr.g)
                for g in attr.graphs:
                    n += walk(g)
        return n

    return walk(model_proto.graph)


def io_dims(model_proto) -> dict[str, list]:
    """name -> dims (int or symbolic name) of every graph input and output."""
    out = {}
    for v in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = []
        for d in v.type.tensor_type.shape.dim:
            dims.append(d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None))
        out[v.name] = dims
    return out


def _checked(candidate, original, tool: str) -> str | None:
    """None when ``candidate`` is a valid graph with the same input dims as ``original``, else why not."""
    import onnx

    try:  # an optimized graph that no longer type-checks is worse than none
        onnx.checker.check_model(candidate, full_check=True)
    except Exception as e:
        return f"{tool} produced an invalid graph ({str(e).strip().splitlines()[0][:200]}); step skipped"
    old_dims, new_dims = io_dims(original), io_dims(candidate)
    for v in original.graph.input:
        if old_dims[v.name] != new_dims.get(v.name):
            return f"{tool} changed input {v.name!r} dims {old_dims[v.name]} -> {new_dims.get(v.name)}; step skipped"
    return None


def _onnxscript(model_proto):
    """onnxscript's optimizer: constant folding and its default rewrites (BatchNorm folded into Conv)."""
    import onnxscript.optimizer

    return onnxscript.optimizer.optimize(model_proto)


def _onnxslim(model_proto):
    import onnxslim

    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(model_proto)


def optimize(model_proto) -> OptimizeResult:
    """onnxscript's optimizer, then onnxslim; a step that fails or fixes an input dim is skipped."""
    import onnx

    before = count_nodes(model_proto)
    current, tools, notes = model_proto, [], []
    for tool, step in (("onnxscript", _onnxscript), ("onnxslim", _onnxslim)):
        work = onnx.ModelProto()
        work.CopyFrom(current)  # the tools may edit their argument in place
        try:
            candidate = step(work)
        except Exception as e:  # optimization is best effort; the exported graph is already valid
            notes.append(f"{tool} failed: {type(e).__name__}: {str(e)[:200]}; step skipped")
            continue
        why = _checked(candidate, current, tool)
        if why:
            notes.append(why)
            continue
        current = candidate
        tools.append(tool)
    return OptimizeResult(current, "+".join(tools) or None, before, count_nodes(current), "; ".join(notes) or None)
