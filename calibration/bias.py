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
The Q/DQ model runs cut into one short graph per corrected layer (:class:`_Segments`), each fed the
tensors the segments before it computed with their biases corrected, so every node runs about twice in
all; the FP32 outputs come from one run of the float model the Q/DQ model was written from, the layers
matched by their weight initializer's name.

Measured by ``benchmarks/bench_real_int8.py`` (docs/BENCHMARKS.md section 6, second run: EfficientNet-
Lite1/2, three profiles, 30 real photo crops, 7-bit weights on an AVX2 CPU): top-1 agreement with FP32 on
the stable evaluation crops 0.719-0.891 without, 0.875-0.981 with, at 7 sizes. The segments give the
same biases as running the whole model once per layer, which is what this did before
(tests/test_real_int8.py checks it on EfficientNet-Lite1); section 6's fourth run gives the build times
before and after.
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
    runs = _runs(feeds, batch)
    want = _means(fp32, [la.fp32_output for la in layers], runs, threads)
    inits = {t.name: t for t in qdq.graph.initializer}
    biases = {la.bias: numpy_helper.to_array(inits[la.bias]) for la in layers}
    segments = _Segments(qdq, layers, runs, threads)
    corrected = 0
    with Progress(len(layers), desc) as bar:
        for k, (la, target) in enumerate(zip(layers, want)):
            got = segments.layer(k, biases)
            step = np.round((target - got) / la.scale)
            bias = biases[la.bias]
            if got.shape == target.shape and bias.shape == step.shape and np.isfinite(step).all():
                new = np.clip(bias.astype(np.int64) + step.astype(np.int64), -INT32_LIMIT, INT32_LIMIT)
                biases[la.bias] = new.astype(np.int32)
                corrected += 1
            segments.advance(k, biases)
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


def _runs(feeds, batch) -> list[tuple[dict[str, np.ndarray], int]]:
    """The calibration feeds grouped by shape in batches: (feed, real samples in it)."""
    return [(feed, real) for group in group_by_shape(feeds) for feed, real in chunks(group, batch)]


def _means(model, outputs: list[str], runs, threads) -> list[np.ndarray]:
    """Per-channel (axis 1) means of ``outputs`` over every sample of ``runs``, from one session."""
    from onnx import TensorProto, helper

    m = type(model)()
    m.CopyFrom(model)
    have = {x.name for x in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o not in have)
    session = cpu_session(m, threads)
    sums, count = [0.0] * len(outputs), 0
    for feed, real in runs:
        for k, o in enumerate(session.run(outputs, feed)):
            sums[k] = sums[k] + _channel_sum(o[:real])
        count += real
    return [s / count for s in sums]


def _channel_sum(x: np.ndarray) -> np.ndarray:
    """Per channel (axis 1): the sum over the batch of each sample's mean over the other axes."""
    return x.astype(np.float64).mean(axis=tuple(a for a in range(x.ndim) if a != 1)) * len(x)


def _reads(node) -> list[str]:
    """The tensors ``node`` reads: its inputs and the outer-scope names its subgraphs (If, Loop) use."""
    names = list(node.input)
    for a in node.attribute:
        for g in [a.g] if a.HasField("g") else list(a.graphs):
            inner = {x.name for x in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                names += [x for x in _reads(n) if x not in inner]
                inner.update(n.output)
    return names


class _Segments:
    """The Q/DQ model cut into one short graph per corrected layer, run in order on cached tensors.

    Segment k holds the nodes after layer k-1's up to layer k's (in the graph's topological order) and
    the constant nodes its nodes read (a DequantizeLinear of a weight or bias goes with its consumer, so
    a bias fed as corrected is never read from a cached tensor). ``layer(k, biases)`` runs segment k on
    every calibration run and returns layer k's per-channel output mean; ``advance(k, biases)`` runs it
    again with the corrected bias and keeps the tensors later segments read. Each node runs about twice in
    all, where the whole model ran once per layer before."""

    def __init__(self, model, layers: Sequence[_Layer], runs, threads):
        self.model, self.threads, self.layers = model, threads, list(layers)
        self.inits = {t.name: t for t in model.graph.initializer}
        nodes = list(model.graph.node)
        producer = {o: i for i, n in enumerate(nodes) for o in n.output}
        const = [False] * len(nodes)
        for i, n in enumerate(nodes):
            const[i] = all(not x or x in self.inits or (x in producer and const[producer[x]]) for x in _reads(n))
        # segment of each non-constant node: the first layer at or after it; nodes after the last layer are dropped
        ends = [producer[la.output] for la in layers]
        seg = [None] * len(nodes)
        k = 0
        for i in range(len(nodes)):
            while k < len(ends) and ends[k] < i:
                k += 1
            if not const[i] and k < len(ends):
                seg[i] = k
        consumers: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for x in _reads(n):
                consumers.setdefault(x, []).append(i)
        for i in reversed(range(len(nodes))):  # constant nodes go with their first consumer's segment
            if const[i]:
                used = [seg[c] for o in nodes[i].output for c in consumers.get(o, []) if seg[c] is not None]
                seg[i] = min(used) if used else None
        self.nodes = [[n for i, n in enumerate(nodes) if seg[i] == k] for k in range(len(layers))]
        last_use = {}
        for i, n in enumerate(nodes):
            if seg[i] is not None:
                for x in _reads(n):
                    last_use[x] = max(last_use.get(x, -1), seg[i])
        self.last_use = last_use
        self.values = [dict(feed) for feed, _ in runs]
        self.real = [real for _, real in runs]
        self.sessions: dict[int, tuple] = {}

    def _session(self, k: int):
        """Segment k's session, its activation inputs and the tensors it keeps for later segments."""
        if k in self.sessions:
            return self.sessions[k]
        from onnx import helper

        nodes, bias = self.nodes[k], self.layers[k].bias
        made = {o for n in nodes for o in n.output}
        reads = list(dict.fromkeys(x for n in nodes for x in _reads(n) if x and x not in made))
        inputs = [x for x in reads if x not in self.inits or x == bias]
        keep = [o for o in dict.fromkeys(o for n in nodes for o in n.output) if self.last_use.get(o, -1) > k]
        outputs = list(dict.fromkeys([self.layers[k].output, *keep]))
        sample = self.values[0]

        def info(name, elem):
            return helper.make_tensor_value_info(name, elem, None)

        graph = helper.make_graph(
            nodes, f"segment{k}",
            [info(x, helper.np_dtype_to_tensor_dtype(sample[x].dtype)) if x != bias else
             info(x, self.inits[x].data_type) for x in inputs],
            [helper.make_empty_tensor_value_info(o) for o in outputs],  # ONNX Runtime infers their types
            [self.inits[x] for x in reads if x in self.inits and x != bias])
        m = helper.make_model(graph, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        m.functions.extend(self.model.functions)
        self.sessions[k] = (cpu_session(m, self.threads), [x for x in inputs if x != bias], outputs)
        return self.sessions[k]

    def layer(self, k: int, biases: dict[str, np.ndarray]) -> np.ndarray:
        """Layer k's per-channel output mean over every calibration sample, with ``biases`` as they are."""
        sess, inputs, _ = self._session(k)
        bias = self.layers[k].bias
        total, count = None, 0
        for values, real in zip(self.values, self.real):
            (o,) = sess.run([self.layers[k].output], {**{x: values[x] for x in inputs}, bias: biases[bias]})
            total = _channel_sum(o[:real]) if total is None else total + _channel_sum(o[:real])
            count += real
        return total / count

    def advance(self, k: int, biases: dict[str, np.ndarray]) -> None:
        """Run segment k with ``biases`` and keep what later segments read; drop what they do not."""
        sess, inputs, outputs = self._session(k)
        bias = self.layers[k].bias
        for values in self.values:
            outs = sess.run(outputs, {**{x: values[x] for x in inputs}, bias: biases[bias]})
            values.update(zip(outputs, outs))
            for name in [x for x in values if self.last_use.get(x, -1) <= k]:
                del values[name]
        del self.sessions[k]
