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
_ELEMENTWISE = {"Mul", "Div", "Add", "Sub", "Where"}  # scaling, masks and biases on attention logits
# Ops that only move q, k and v into place (split heads, transpose) before the attention MatMuls.
_LAYOUT = _PASS_THROUGH | {"Split", "Slice", "Gather", "Concat"}


def load(path: str | Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except FileNotFoundError as e:
        raise CalibrationError(f"model {path} does not exist") from e
    except Exception as e:
        raise CalibrationError(f"cannot read ONNX model {path}: {type(e).__name__}: {e}") from e


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    onnx.save(model, str(path))
    return Path(path)


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


def quantize_op_types() -> list[str]:
    """The op types quantized by default: the ones onnxruntime's ``quantize_static`` quantizes when it is
    not told (its QDQ and QLinear registries), less Softmax (see :func:`softmax_neighbors`).

    Quantizing Relu and Clip (ReLU6) as ORT does matters: its QDQ quantizer then folds the activation
    into the output quantizer of the Conv or MatMul before it, so that quantizer gets the activation's
    range (0..6) instead of the pre-activation's (about +-150 on EfficientNet-Lite, five levels left
    for 0..6) and ORT fuses Conv+activation into one integer kernel."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - {"Softmax"})


def softmax_neighbors(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes of every attention core, kept float by rule: from the MatMul making the
    attention logits (q @ k^T) through the scaling, masks and biases on them, the Softmax, and the
    layout ops after it, to the MatMul reading the weights (attn @ v); and the ops bringing q, k and v
    to those MatMuls (bias add, scaling, head split, transposes).

    Quantizing the Softmax output quantizes the attention weights: with 1000+ tokens most of them fall
    below one quantization step and the output collapses. Quantizing the logits puts quantization error
    inside the exponential. The two MatMuls are activation x activation products, cheap to keep float."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    core: dict[str, None] = {}

    def back(tensor: str, path: list[str], depth: int) -> None:  # Softmax input -> the logits MatMul
        node = producer.get(tensor)
        if node is None or depth > 6:
            return
        if node.op_type in QUANTIZE_OP_TYPES:
            core.update(dict.fromkeys([*path, node.name]))
        elif node.op_type in _PASS_THROUGH | _ELEMENTWISE:
            for i in node.input:
                back(i, [*path, node.name], depth + 1)

    def forward(tensor: str, path: list[str], depth: int) -> None:  # Softmax output -> the attn @ v MatMul
        for node in consumers.get(tensor, []):
            if node.op_type in QUANTIZE_OP_TYPES:
                core.update(dict.fromkeys([*path, node.name]))
            elif node.op_type in _PASS_THROUGH and depth < 6:
                forward(node.output[0], [*path, node.name], depth + 1)

    def layout(tensor: str, depth: int) -> None:
        """q, k and v as they reach the MatMuls: the ops that add the projection's bias, scale, split
        and transpose them (the projection MatMul itself stays INT8; its output is not requantized)."""
        node = producer.get(tensor)
        if node is None or node.name in core or depth >= 8:
            return
        if node.op_type in _LAYOUT:
            core[node.name] = None
            layout(node.input[0], depth + 1)
        elif node.op_type in _ELEMENTWISE:
            core[node.name] = None
            for i in node.input:
                layout(i, depth + 1)

    for n in model.graph.node:
        if n.op_type == "Softmax":
            back(n.input[0], [n.name], 0)
            forward(n.output[0], [n.name], 0)
    by_name = {n.name: n for n in model.graph.node}
    for name in [c for c in core if by_name[c].op_type in QUANTIZE_OP_TYPES]:
        for i in by_name[name].input:
            layout(i, 0)
    return list(core)


def _scope(node: onnx.NodeProto, initializers: set[str] = frozenset()) -> str | None:
    """The module path a node came from: torch.onnx's name-scope metadata, else a '/a/b/Op' name, else
    the module path in its weight's name ('_blocks.3._expand_conv.weight': the optimizers that fold
    and fuse the exported graph drop node metadata, but weights keep the state-dict names)."""
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
    for name in node.input[1:2]:
        if name in initializers and "." in name:
            return name.rsplit(".", 1)[0]
    return None


def block_of(scope: str | None, depth: int = 2, keep_index: bool = False) -> str | None:
    """The module path cut after its ``depth``-th named part: 'blocks.0.attn.qkv' -> 'blocks.0.attn',
    'net.stem.0.0' -> 'net.stem', 'fine.1.0.0' -> 'fine.1.0.0' (one named part: the layer itself);
    ``keep_index`` keeps the indices right after the cut: '_blocks.3._expand_conv' -> '_blocks.3' (depth 1)."""
    if not scope:
        return None
    out: list[str] = []
    named = 0
    for part in scope.split("."):
        if named == depth and not (keep_index and re.fullmatch(r"\d+", part)):
            break
        if not re.fullmatch(r"\d+", part):
            named += 1
        out.append(part)
    return ".".join(out)


MAX_GROUPS = 24  # the budget evaluates each block once: more blocks than this are merged into their parents


def node_groups(model: onnx.ModelProto, names: list[str], max_groups: int = MAX_GROUPS) -> OrderedDict[str, list[str]]:
    """Group quantized node names into blocks (by module scope) for the sensitivity pass, in graph order:
    'blocks.0.attn', or, where that gives more than ``max_groups`` blocks, 'blocks.0' (EfficientNet's
    65 convs -> its 16 MBConv blocks, stem, head and classifier)."""
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    scopes: dict[str, str | None] = {}
    for n in model.graph.node:  # graph order: a weightless node (Add, Concat) takes its producer's scope
        own = _scope(n, inits)
        if own is None:
            own = next((scopes[producer[i].name] for i in n.input
                        if i in producer and scopes.get(producer[i].name)), None)
        scopes[n.name] = own
    for depth, keep_index in ((2, False), (1, True)):
        groups: OrderedDict[str, list[str]] = OrderedDict()
        for name in names:
            groups.setdefault(block_of(scopes[name], depth, keep_index) or name, []).append(name)
        if len(groups) <= max_groups:
            break
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


def constant_castlike(model: onnx.ModelProto) -> int:
    """Turn ``CastLike(initializer, x)`` with a known x dtype into an initializer of that dtype.

    torch.onnx writes the zero bias of a bias-free Conv as ``Expand(CastLike(0, input), shape)``; the
    CastLike reads the input, so nothing folds it, and the Conv + BatchNormalization pair can then not be
    fused, which leaves float work between every Q/DQ pair. Returns how many were replaced."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    keep, added = [], 0
    for node in model.graph.node:
        if node.op_type == "CastLike" and node.input[0] in inits and types.get(node.input[1]):
            value = numpy_helper.to_array(inits[node.input[0]])
            dtype = onnx.helper.tensor_dtype_to_np_dtype(types[node.input[1]])
            model.graph.initializer.append(numpy_helper.from_array(value.astype(dtype), node.output[0]))
            added += 1
        else:
            keep.append(node)
    if added:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return added


def prepare_for_quantization(src: str | Path, dst: str | Path) -> Path:
    """What onnxruntime recommends before static quantization, on a copy: constant CastLikes folded,
    then ORT's basic graph optimizations (constant folding, Conv+BatchNormalization/Add/Mul fusion) and
    shape inference. Falls back to the plain copy if the optimizer fails."""
    import contextlib
    import io
    import logging

    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ort.set_default_logger_severity(3)
    model = load(src)
    constant_castlike(model)
    ensure_node_names(model)
    onnx.save(model, str(dst))
    optimized = Path(dst).with_name(Path(dst).stem + ".pre.onnx")
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(dst), str(optimized), skip_symbolic_shape=True)
        pre = onnx.load(str(optimized))
        for old, new in zip(model.graph.input, pre.graph.input):
            if old.type != new.type:  # a dynamic axis became static: keep the unoptimized copy
                return Path(dst)
        ensure_node_names(pre)
        pre.ClearField("metadata_props")
        pre.metadata_props.extend(model.metadata_props)
        onnx.save(pre, str(dst))
    except Exception:
        pass
    finally:
        logger.setLevel(level)
        optimized.unlink(missing_ok=True)
    return Path(dst)


def batch_limits(model: onnx.ModelProto, names) -> tuple[int, int]:
    """Batch sizes the model's image inputs take: (b, b) when dim 0 is fixed to b, else (1, 8)."""
    fixed = set()
    for vi in model.graph.input:
        if vi.name in names:
            dims = vi.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                fixed.add(dims[0].dim_value)
    if len(fixed) == 1:
        b = fixed.pop()
        return (b, b)
    return (1, 8)
