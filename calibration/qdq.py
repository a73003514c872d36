"""Write the explicit-quantization (Q/DQ) ONNX model from activation ranges.

The calibration target is a backend of the registry; its ``qdq_activations`` picks the activation type:
``uint8`` asymmetric (``onnxruntime``, whose CPU kernels are fast for those, symmetric int8 activations
running slower than FP32 there; ``openvino``) or ``int8`` symmetric (``tensorrt``: what TensorRT's
explicit quantization takes). Weights are int8, symmetric, per channel, for every target; for a backend
with ``qdq_reduce_range`` (ONNX Runtime, OpenVINO) on a CPU without VNNI they use 7 of the 8 bits
(:func:`reduce_range`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mrdeploy._atomic import run_tempdir
from mrdeploy.calibration.ranges import _quiet_ort, ort_method
from mrdeploy.errors import CalibrationError, MrdeployError
from mrdeploy.runtime.backends.registry import backend_names, get_backend


def targets() -> list[str]:
    """The registered backends that take Q/DQ models (their ``qdq_activations`` is set)."""
    out = []
    for name in backend_names():
        try:
            if get_backend(name).qdq_activations:
                out.append(name)
        except MrdeployError:  # a registered backend whose module does not import here
            continue
    return out


def target_backend(target: str):
    """The registry's Backend class for a calibration target; CalibrationError naming the targets."""
    if target not in backend_names() or not get_backend(target).qdq_activations:
        raise CalibrationError(f"calibration target {target!r}: expected one of {', '.join(targets())}")
    return get_backend(target)


def symmetric(target: str) -> bool:
    """Symmetric int8 activations (TensorRT) rather than asymmetric uint8 ones (ONNX Runtime, OpenVINO)."""
    return target_backend(target).qdq_activations == "int8"


def activation_type(target: str):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if symmetric(target) else QuantType.QUInt8


def cpu_has_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU has an 8-bit dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX); None
    where the flags cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def reduce_range(target: str) -> bool:
    """7-bit weights for the targets that ask (``qdq_reduce_range``: ONNX Runtime, OpenVINO) on a CPU
    without VNNI. There their u8s8 kernels multiply with
    VPMADDUBSW, which adds pairs of uint8 x int8 products into int16 and saturates (255 x 127 x 2 >
    32767); 7-bit weights cannot (ORT's quantization docs give the same advice). Measured on this
    project's AVX2 build machine, EfficientNet-Lite1 INT8 at 192, top-1 agreement with FP32 on 60 photo
    crops: 0.37 with 8-bit weights, 0.62 with 7-bit; the same Q/DQ model without the fused kernels
    (exact int32 arithmetic, as TensorRT and VNNI CPUs compute) 0.78."""
    return target_backend(target).qdq_reduce_range and cpu_has_vnni() is False


BIAS_LIMIT = 2 ** 30  # an int32 bias past this leaves the integer kernel's accumulator no headroom


def zero_overflowing_channels(model, ranges: Mapping[str, Sequence[float]], target: str, weight_bits: int) -> int:
    """Zero, in place, the weights of every Conv/Gemm output channel whose int32 bias would not fit.

    A channel whose weights are ~0 next to its bias (BatchNorm folding leaves such dead channels: a
    gamma near 0 over a beta that is not) gets a weight scale ~1e-7, so ``bias / (x_scale * w_scale)``
    is past int32. ORT's quantizer then stretches the weight scale until the bias just fits, at about
    -2^31, and the integer kernel's accumulator overflows there: on EfficientNet-Lite1 the stem conv
    alone in INT8 cost 0.19 of top-1 agreement. Such a channel computes its bias and nothing else, so
    its weights are set to exactly 0 (ORT then uses scale 1 for it). Returns how many channels."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    qmax = 2 ** (weight_bits - 1) - 1
    zeroed = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        x, w_name, b_name = node.input[:3]
        if w_name not in inits or b_name not in inits or x not in ranges:
            continue
        if node.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in node.attribute):
            continue  # per-channel axis 0 only for (out, in) weights
        lo, hi = (float(v) for v in ranges[x])
        x_scale = (max(abs(lo), abs(hi)) * 2 if symmetric(target) else max(hi, 0.0) - min(lo, 0.0)) / 255
        w = numpy_helper.to_array(inits[w_name]).copy()
        b = numpy_helper.to_array(inits[b_name])
        w_scale = np.abs(w.reshape(w.shape[0], -1)).max(1) / qmax
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.abs(b) / (x_scale * w_scale)
        dead = (w_scale > 0) & (np.abs(b) > 0) & ~(need <= BIAS_LIMIT)
        if dead.any():
            w[dead] = 0
            inits[w_name].CopyFrom(numpy_helper.from_array(w, w_name))
            zeroed += int(dead.sum())
    return zeroed


def tensors_data(ranges: Mapping[str, Sequence[float]], method: str):
    """{tensor: [lo, hi]} -> onnxruntime TensorsData for ``method``."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    data = {k: TensorData(lowest=np.array(v[0], dtype=np.float32), highest=np.array(v[1], dtype=np.float32))
            for k, v in ranges.items()}
    return TensorsData(ort_method(method), data)


def write_qdq(
    model_path: str | Path,
    out_path: str | Path,
    ranges: Mapping[str, Sequence[float]],
    method: str,
    target: str = "onnxruntime",
    op_types: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    weight_bits: int = 8,
) -> Path:
    """Quantize ``model_path`` with the given ranges into ``out_path`` (QDQ format): ``op_types`` default
    to the ones plain ONNX Runtime quantizes (:func:`graph.quantize_op_types`); ``weight_bits`` 7 is
    ORT's ``reduce_range``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from mrdeploy.calibration.graph import quantize_op_types

    if weight_bits not in (7, 8):
        raise CalibrationError(f"weight_bits: expected 7 or 8, got {weight_bits}")

    sym = symmetric(target)
    extra = {
        "ActivationSymmetric": sym,
        "WeightSymmetric": True,
        "DedicatedQDQPair": sym,  # TensorRT fuses per consumer
        # a MatMul/Gemm output is quantized only where a consumer quantizes its input: the q, k, v
        # projections feeding a float attention core stay float, and so do a classifier's logits
        "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
    }
    with tempfile.TemporaryDirectory(prefix="mrdeploy-qdq-", dir=run_tempdir()) as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(tensors_data(ranges, method), cache)
        import onnx

        model = onnx.load(str(model_path))
        if zero_overflowing_channels(model, ranges, target, weight_bits):
            model_path = Path(tmp) / "dead_channels_zeroed.onnx"
            onnx.save(model, str(model_path))
        try:
            with _quiet_ort():
                quantize_static(
                    str(model_path),
                    str(out_path),
                    None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types if op_types is not None else quantize_op_types()),
                    per_channel=True,
                    reduce_range=weight_bits == 7,
                    activation_type=activation_type(target),
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(exclude),
                    calibrate_method=ort_method(method),
                    extra_options=extra,
                    calibration_cache_path=cache,
                )
        except CalibrationError:
            raise
        except Exception as e:
            raise CalibrationError(f"quantizing {model_path} failed: {type(e).__name__}: {e}") from e
    return Path(out_path)


def qdq_summary(path: str | Path) -> dict:
    """Counts of Q/DQ nodes and the activation zero-point dtypes in a Q/DQ model (for reports and tests)."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    dtypes = set()
    for n in q:
        if len(n.input) > 2 and n.input[2] in inits:
            dtypes.add(onnx.helper.tensor_dtype_to_np_dtype(inits[n.input[2]].data_type).name)
    return {"quantize": len(q), "dequantize": len(dq), "activation_dtypes": sorted(dtypes)}


def keep_float(qdq, fp32, names) -> object:
    """A copy of the Q/DQ model ``qdq`` in which the nodes ``names`` compute in float: each of their
    inputs that comes through a DequantizeLinear is connected back to the tensor the FP32 model
    ``fp32`` (the model ``qdq`` was quantized from) gives that input, float weights included. Outputs
    keep their quantizers where consumers read them quantized. Where the FP32 tensor is gone (an
    activation ORT folded into the quantizer before it), the input stays quantized. Dead Q/DQ nodes and
    unused initializers are removed.

    Equivalent to quantizing again with ``names`` excluded, in milliseconds instead of seconds: the
    accuracy budget scores one such model per candidate."""
    import onnx

    names = set(names)
    m = onnx.ModelProto.FromString(qdq.SerializeToString())
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    fp32_inits = {i.name: i for i in fp32.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    available = {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.input}
    have = {i.name for i in m.graph.initializer}
    fp32_producer = {o: n.name for n in fp32.graph.node for o in n.output}
    graph_inputs = {i.name for i in m.graph.input}

    def same_producer(tensor: str) -> bool:
        """The tensor is what it was in FP32: ORT folds a Relu/Clip into the quantizer before it and
        gives the activation's output name to the Conv's output, which then holds unclipped values."""
        if tensor in graph_inputs:
            return True
        return tensor in producer and producer[tensor].name == fp32_producer.get(tensor)

    recreated: dict[str, str] = {}
    new_nodes: list = []

    def folded_activation(tensor: str) -> bool:
        """ORT folded the activation making ``tensor`` (Relu, Clip) into the quantizer after the node
        before it, which now writes ``tensor`` unclipped."""
        act = fp32_nodes.get(fp32_producer.get(tensor, ""))
        if act is None or act.op_type not in ("Relu", "Clip") or tensor not in producer:
            return False
        return producer[tensor].name == fp32_producer.get(act.input[0])

    def refloat(tensor: str) -> str:
        """The folded activation again, in float, on the unclipped tensor."""
        if tensor not in recreated:
            act = fp32_nodes[fp32_producer[tensor]]
            for extra in act.input[1:]:
                if extra and extra in fp32_inits and extra not in have and extra not in available:
                    m.graph.initializer.append(fp32_inits[extra])
                    have.add(extra)
            out = f"{tensor}_float"
            clone = onnx.NodeProto()
            clone.CopyFrom(act)
            clone.name = f"{act.name}_float"
            clone.input[0] = tensor
            del clone.output[:]
            clone.output.append(out)
            new_nodes.append(clone)
            recreated[tensor] = out
        return recreated[tensor]

    for node in m.graph.node:
        if node.name not in names or node.name not in fp32_nodes:
            continue
        original = fp32_nodes[node.name].input
        for k, tensor in enumerate(node.input):
            dq = producer.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear" or k >= len(original) or not original[k]:
                continue
            want = original[k]
            if want in fp32_inits:
                name = want if want not in available else f"{want}_float"  # ORT names a bias's DQ output after it
                if name not in have:
                    init = onnx.TensorProto()
                    init.CopyFrom(fp32_inits[want])
                    init.name = name
                    m.graph.initializer.append(init)
                    have.add(name)
                node.input[k] = name
            elif want in available and same_producer(want):
                node.input[k] = want
            elif want in available and folded_activation(want):
                node.input[k] = refloat(want)
    for clone in new_nodes:  # after its input's producer, before its consumers: keep the graph sorted
        consumer = next(i for i, n in enumerate(m.graph.node) if clone.output[0] in n.input)
        m.graph.node.insert(consumer, clone)
    _prune(m)
    return m


def _prune(model) -> None:
    """Remove nodes none of whose outputs is used, repeatedly, then unused initializers."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input} | outputs
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
