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


def optimize(model_proto) -> OptimizeResult:
    """onnxslim the model; keep the original when slimming fails or turns an input dim static."""
    before = count_nodes(model_proto)
    try:
        import onnx
        import onnxslim

        work = onnx.ModelProto()
        work.CopyFrom(model_proto)  # onnxslim may edit its argument in place
        with contextlib.redirect_stdout(io.StringIO()):
            slim = onnxslim.slim(work)
    except Exception as e:  # optimization is best effort; the exported graph is already valid
        return OptimizeResult(model_proto, None, before, before, f"onnxslim failed: {type(e).__name__}: {e}"[:300])
    try:  # a slimmed graph that no longer type-checks is worse than none
        onnx.checker.check_model(slim, full_check=True)
    except Exception as e:
        note = f"onnxslim produced an invalid graph ({str(e).strip().splitlines()[0][:200]}); kept the unoptimized graph"
        return OptimizeResult(model_proto, None, before, before, note)
    old_dims, new_dims = io_dims(model_proto), io_dims(slim)
    for v in model_proto.graph.input:
        if old_dims[v.name] != new_dims.get(v.name):
            return OptimizeResult(
                model_proto, None, before, before,
                f"onnxslim changed input {v.name!r} dims {old_dims[v.name]} -> {new_dims.get(v.name)}; kept the unoptimized graph",
            )
    return OptimizeResult(slim, "onnxslim", before, count_nodes(slim))
