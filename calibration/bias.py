"""Bias correction: each INT8 layer's per-channel output mean put back where FP32 has it.

Rounding weights to int8 (7 bits on a CPU without VNNI) and activations to 256 levels shifts the mean of
each output channel of a Conv, and the shifts add up layer after layer; on a depthwise-separable network
the mean is where most of the error is. Empirical bias correction (Nagel et al. 2019, "Data-Free
Quantization", section 4.2; NNCF's FastBiasCorrection does the same) removes it: for every Conv/Gemm of
the Q/DQ model whose bias is an int32 initializer behind a DequantizeLinear (what ONNX Runtime's
quantizer writes), in graph order,

    bias_int32 += round((E[fp32 output] - E[int8 output]) / bias_scale)      per output channel,

the means taken over the calibration samples (every axis but the channel axis), the INT8 outputs those
of the model with every earlier layer already corrected: a layer's shift depends on the layers before it,
and correcting all layers at once (in one pass, or three) overshot and ruined EfficientNet-Lite1 when
tried while writing this (an ad-hoc check, not a script of the repo).
All steps share one session, whose int32 biases are inputs fed as corrected so far. The FP32 outputs
come from the float model the Q/DQ model was written from, the layers matched by their weight
initializer's name.

Measured by ``benchmarks/bench_real_int8.py`` (docs/BENCHMARKS.md section 6, second run: EfficientNet-
Lite1/2, three profiles, 30 real photo crops, 7-bit weights on an AVX2 CPU): top-1 agreement with FP32 on
the stable evaluation crops 0.719-0.891 without, 0.875-0.981 with, at 7 sizes. Cost: one run of the
calibration samples through the whole Q/DQ model per corrected layer (ONNX Runtime runs every node
whatever output is asked for; with the biases as inputs it runs the Q/DQ pairs in float, not its int8
kernels): most of an INT8 build's time (section 6, third run: 258-272 s per three-profile build
against 17-33 s without the correction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mrdeploy._ort import cpu_session
from mrdeploy._progress import Progress
from mrdeploy.calibration.preprocess import chunks, group_by_shape

CORRECTED_OPS = ("Conv", "Gemm")
# fewer calibration samples than this: the biases are left as quantized. Means over 4 samples moved a
# weak digits classifier (tests/test_families.py, crossmax) from 32 of 32 agreeing with FP32 to 26.
MIN_SAMPLES = 16
INT32_LIMIT = 2 ** 31 - 1


@dataclass
class _Layer:
    output: str  # the layer's output in the Q/DQ model
    fp32_output: str  # the same layer's output in the float model
    bias: str  # the int32 bias initializer
    scale: np.ndarray  # the bias's dequantization scale, per output channel or one


def correct_biases(qdq, fp32, feeds: Sequence[dict[str, np.ndarray]], *, batch: tuple[int, int] = (1, 1 << 30),
                   threads: int | None = None, desc: str = "bias correction") -> int:
    """Correct, in place, the int32 biases of the Q/DQ ModelProto ``qdq`` written from the float
    ModelProto ``fp32``, on the per-sample ``feeds``; returns how many layers were corrected."""
    from onnx import numpy_helper

    layers = _layers(qdq, fp32)
    if not layers or not feeds:
        return 0
    want = _Means(fp32, [la.fp32_output for la in layers], feeds, batch, threads)()
    inits = {t.name: t for t in qdq.graph.initializer}
    biases = {la.bias: numpy_helper.to_array(inits[la.bias]) for la in layers}
    # one session for every step: the biases are inputs of it, fed as corrected so far
    means = _Means(qdq, [la.output for la in layers], feeds, batch, threads, inputs=list(biases))
    corrected = 0
    with Progress(len(layers), desc) as bar:
        for k, (la, target) in enumerate(zip(layers, want)):
            got = means(biases, only=k)
            step = np.round((target - got) / la.scale)
            bias = biases[la.bias]
            if got.shape == target.shape and bias.shape == step.shape and np.isfinite(step).all():
                new = np.clip(bias.astype(np.int64) + step.astype(np.int64), -INT32_LIMIT, INT32_LIMIT)
                biases[la.bias] = new.astype(np.int32)
                corrected += 1
            bar.update(1)
    for name, value in biases.items():
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    return corrected


def _layers(qdq, fp32) -> list[_Layer]:
    """The Q/DQ model's Conv/Gemm layers with an int32 bias, in graph order, matched to the float model."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    by_weight = {(n.op_type, n.input[1]): n.output[0] for n in fp32.graph.node
                 if n.op_type in CORRECTED_OPS and len(n.input) > 1}
    out = []
    for n in qdq.graph.node:
        if n.op_type not in CORRECTED_OPS or len(n.input) < 3:
            continue
        bias_dq, weight_dq = producer.get(n.input[2]), producer.get(n.input[1])
        if bias_dq is None or bias_dq.op_type != "DequantizeLinear":
            continue
        bias, scale = inits.get(bias_dq.input[0]), inits.get(bias_dq.input[1])
        if bias is None or scale is None or bias.data_type != TensorProto.INT32:
            continue
        weight = n.input[1]
        if weight_dq is not None and weight_dq.op_type == "DequantizeLinear":
            weight = weight_dq.input[0].removesuffix("_quantized")  # ORT's name for a quantized weight
        fp32_output = by_weight.get((n.op_type, weight))
        if fp32_output is not None:
            out.append(_Layer(n.output[0], fp32_output, bias.name, numpy_helper.to_array(scale).astype(np.float64)))
    return out


class _Means:
    """Per-channel (axis 1) means of ``outputs`` over every sample of ``feeds``, from one session; the
    initializers named in ``inputs`` become graph inputs, fed at each call."""

    def __init__(self, model, outputs: list[str], feeds, batch, threads, inputs: Sequence[str] = ()):
        from onnx import TensorProto, helper

        m = type(model)()
        m.CopyFrom(model)
        have = {x.name for x in m.graph.output}
        m.graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                              for o in outputs if o not in have)
        fed = set(inputs)
        for t in [t for t in m.graph.initializer if t.name in fed]:
            m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            m.graph.initializer.remove(t)
        self.session = cpu_session(m, threads)
        self.outputs = outputs
        self.runs = [(feed, real) for group in group_by_shape(feeds) for feed, real in chunks(group, batch)]

    def __call__(self, extra: dict[str, np.ndarray] | None = None, only: int | None = None):
        """The means of every output, or of output ``only``."""
        names = self.outputs if only is None else [self.outputs[only]]
        sums: list[np.ndarray] | None = None
        count = 0
        for feed, real in self.runs:
            outs = self.session.run(names, {**feed, **(extra or {})})
            step = [o[:real].astype(np.float64).mean(axis=tuple(a for a in range(o.ndim) if a != 1)) * real
                    for o in outs]
            sums = step if sums is None else [s + t for s, t in zip(sums, step)]
            count += real
        means = [s / count for s in sums]
        return means if only is None else means[0]
