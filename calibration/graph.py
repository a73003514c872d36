"""What calibration needs to know about an ONNX graph: its ModelInfo, which nodes to quantize and how
they group into blocks for the sensitivity pass, and which must stay float by rule."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import onnx

from mrdeploy.errors import CalibrationError
from mrdeploy.runtime.modelinfo import InputInfo, ModelInfo, OutputInfo

QUANTIZE_OP_TYPES = ("Conv", "MatMul", "Gemm")
# Ops a Softmax output may pass through unchanged in layout terms before the attention MatMul.
_PASS_THROUGH = {"Transpose", "Reshape", "Cast", "Identity", "Dropout", "Squeeze", "Unsqueeze", "Flatten"}


def load(path: str | Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except FileNotFoundError as e:
        raise CalibrationError(f"model {path} does not exist") from e
    except Exception as e:
        raise CalibrationError(f"cannot read ONNX model {path}: {type(e).__name__}: {e}") from e


def model_info(model: onnx.ModelProto) -> ModelInfo:
    """ModelInfo from the model's mrdeploy metadata, or a minimal one inferred from the graph."""
    info = ModelInfo.from_metadata_props({p.key: p.value for p in model.metadata_props})
    if info is not None and info.inputs:
        return info
    inits = {i.name for i in model.graph.initializer}
    inputs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        c = dims[1].dim_value if len(dims) == 4 and dims[1].dim_value else 3
        inputs.append(InputInfo(name=vi.name, channels=c))
    outputs = [OutputInfo(name=o.name) for o in model.graph.output]
    return ModelInfo(name=Path(model.graph.name or "model").stem, task="dense", inputs=inputs, outputs=outputs)


def quantizable_nodes(model: onnx.ModelProto, op_types=QUANTIZE_OP_TYPES) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in op_types]


def softmax_consumers(model: onnx.ModelProto, op_types=QUANTIZE_OP_TYPES) -> list[str]:
    """Names of quantizable nodes that read a Softmax output (through layout-only ops).

    Quantizing such a node's input quantizes the attention weights: with 1000+ tokens most of them fall
    below one quantization step and the output collapses, so these nodes stay float (and so does the
    Softmax, which is never in the quantized op types)."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def from_softmax(tensor: str, depth: int = 0) -> bool:
        node = producer.get(tensor)
        if node is None or depth > 6:
            return False
        if node.op_type == "Softmax":
            return True
        return node.op_type in _PASS_THROUGH and bool(node.input) and from_softmax(node.input[0], depth + 1)

    return [n.name for n in model.graph.node if n.op_type in op_types and any(from_softmax(i) for i in n.input)]


def _scope(node: onnx.NodeProto) -> str | None:
    """The module path a node came from: torch.onnx's name-scope metadata, else a '/a/b/Op' name."""
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            import ast

            names = [s for s in ast.literal_eval(scopes) if s]
        except (ValueError, SyntaxError):
            names = []
        if names:
            return names[-1]
    if node.name.startswith("/") and node.name.count("/") >= 2:
        return node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
    return None


def block_of(scope: str | None, depth: int = 2) -> str | None:
    """The module path cut after its ``depth``-th named part: 'blocks.0.attn.qkv' -> 'blocks.0.attn',
    'net.stem.0.0' -> 'net.stem', 'fine.1.0.0' -> 'fine.1.0.0' (one named part: the layer itself)."""
    if not scope:
        return None
    out: list[str] = []
    named = 0
    for part in scope.split("."):
        if named == depth:
            break
        if not re.fullmatch(r"\d+", part):
            named += 1
        out.append(part)
    return ".".join(out)


def node_groups(model: onnx.ModelProto, names: list[str]) -> OrderedDict[str, list[str]]:
    """Group quantized node names into blocks (by module scope) for the sensitivity pass, in graph order."""
    by_name = {n.name: n for n in model.graph.node}
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for name in names:
        key = block_of(_scope(by_name[name])) or name
        groups.setdefault(key, []).append(name)
    return groups


def ensure_node_names(model: onnx.ModelProto) -> bool:
    """Give every unnamed node a unique name (quantizer exclusions work by name); True if any changed."""
    seen: set[str] = set()
    changed = False
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
            changed = True
        seen.add(n.name)
    return changed
