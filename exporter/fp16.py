"""Cast an ONNX model's float compute to float16, keeping its inputs and outputs float32.

For TensorRT 11, where every network is strongly typed and precision comes from the model itself (no
FP16 builder flag). onnxconverter-common is not a dependency, so this is a small pass of our own:

- float32 initializers and Constant values used by compute become float16 (values clipped to the fp16
  range); ``Cast(to=FLOAT)`` on the compute path becomes ``Cast(to=FLOAT16)``; ConstantOfShape values too;
- each float input gets a ``Cast(to=FLOAT16)`` after it, each float output a ``Cast(to=FLOAT)`` before it;
- *shape arithmetic stays float32*: tensors computed only from ``Shape``/``Size`` outputs and constants
  (e.g. a resampled grid size) are left alone, so sizes above 2048 do not round;
- inputs that ONNX requires to be float32 (``Resize`` scales, ``Upsample`` scales) get a Cast back.
"""

from __future__ import annotations

import numpy as np

F32, F16 = 1, 10
# ops that carry shape arithmetic forward (a tensor computed by them from shapes and small constants)
_SHAPE_MATH = {
    "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Add", "Sub", "Mul", "Div", "Floor",
    "Ceil", "Round", "Min", "Max", "Sqrt", "Reshape", "Identity", "Neg", "Abs", "Mod", "Pow",
    "ReduceProd", "Range", "Equal", "Where", "Less", "Greater", "Not", "Expand", "ConstantOfShape",
}
_FP32_SLOTS = {("Resize", 2), ("Upsample", 1)}
_FP16_MAX = float(np.finfo(np.float16).max)


def _to_fp16(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16)


def convert_to_fp16(model):
    """A float16 copy of ``model`` (see the module docstring)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto.FromString(model.SerializeToString())
    try:
        inferred = onnx.shape_inference.infer_shapes(m)
    except Exception:
        inferred = m
    g = m.graph
    # Constant nodes with a tensor value -> initializers (one place to convert)
    keep_nodes = []
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
        else:
            keep_nodes.append(n)
    del g.node[:]
    g.node.extend(keep_nodes)

    inits = {t.name: t for t in g.initializer}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*inferred.graph.value_info, *g.input, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    small = {name for name, t in inits.items() if int(np.prod(t.dims)) <= 16}
    # taint: tensors computed from shapes (and small constants) only
    shape_like: set[str] = set()
    for n in g.node:  # nodes are topologically sorted in a valid model
        ins = [i for i in n.input if i]
        if n.op_type in ("Shape", "Size"):
            shape_like.update(n.output)
        elif (
            n.op_type in _SHAPE_MATH
            and any(i in shape_like for i in ins)
            and all(i in shape_like or i in small for i in ins)
        ):
            shape_like.update(n.output)

    def compute_slot(n, idx: int) -> bool:
        return n.op_type != "Shape" and (n.op_type, idx) not in _FP32_SLOTS and not set(n.output) <= shape_like

    consumers: dict[str, list] = {}
    for n in g.node:
        for idx, i in enumerate(n.input):
            consumers.setdefault(i, []).append((n, idx))

    # initializers: fp16 for compute consumers; fp32 kept where shape math / fp32 slots use them
    new_inits = []
    for t in list(g.initializer):
        if t.data_type != F32:
            continue
        users = consumers.get(t.name, [])
        compute = [(n, i) for n, i in users if compute_slot(n, i)]
        if not compute:
            continue
        arr = _to_fp16(numpy_helper.to_array(t))
        if len(compute) == len(users):
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
        else:
            name16 = t.name + "__fp16"
            new_inits.append(numpy_helper.from_array(arr, name16))
            for n, i in compute:
                n.input[i] = name16
    g.initializer.extend(new_inits)

    # compute-path casts and ConstantOfShape values
    for n in g.node:
        if set(n.output) <= shape_like:
            continue
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == F32:
                a.i = F16
            if n.op_type == "ConstantOfShape" and a.name == "value" and a.t.data_type == F32:
                a.t.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(a.t)), a.t.name))

    new_nodes = []
    # inputs: cast to fp16
    for vi in g.input:
        if vi.name in inits or vi.type.tensor_type.elem_type != F32:
            continue
        name16 = vi.name + "__fp16"
        new_nodes.append(helper.make_node("Cast", [vi.name], [name16], to=F16, name=f"{vi.name}__to_fp16"))
        for n, i in consumers.get(vi.name, []):
            if compute_slot(n, i):
                n.input[i] = name16
    # fp32-only slots fed by a compute tensor: cast back; float shape math used by compute: cast to fp16
    slot_casts = {}
    for n in list(g.node):
        for idx, i in enumerate(n.input):
            if not i or i in inits:
                continue
            if (n.op_type, idx) in _FP32_SLOTS and i not in shape_like:
                name32 = f"{i}__fp32_{n.name or n.op_type}_{idx}"
                slot_casts[name32] = helper.make_node("Cast", [i], [name32], to=F32, name=name32)
                n.input[idx] = name32
            elif i in shape_like and types.get(i) == F32 and compute_slot(n, idx):
                name16 = f"{i}__to16_{n.name or n.op_type}_{idx}"
                slot_casts[name16] = helper.make_node("Cast", [i], [name16], to=F16, name=name16)
                n.input[idx] = name16
    # outputs: cast back to fp32 under the original name
    out_names = {vo.name for vo in g.output if vo.type.tensor_type.elem_type == F32}
    renames = {}
    for n in g.node:
        for k, o in enumerate(n.output):
            if o in out_names:
                renames[o] = o + "__fp16"
                n.output[k] = renames[o]
    for n in g.node:
        for k, i in enumerate(n.input):
            if i in renames:
                n.input[k] = renames[i]
    tail = [helper.make_node("Cast", [new], [old], to=F32, name=f"{old}__to_fp32") for old, new in renames.items()]
    # a topologically valid order: input casts, then the graph with the fp32-slot casts right before use
    body = []
    for n in g.node:
        for i in n.input:
            if i in slot_casts:
                body.append(slot_casts.pop(i))
        body.append(n)
    del g.node[:]
    g.node.extend(new_nodes + body + tail)
    del g.value_info[:]
    return m
