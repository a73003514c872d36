"""Write the explicit-quantization (Q/DQ) ONNX model from activation ranges.

Activation types follow the target backend: ``onnxruntime`` gets asymmetric uint8 activations (its CPU
kernels are fast for those; symmetric int8 activations run slower than FP32 there), ``tensorrt`` gets
symmetric int8 activations (what TensorRT's explicit quantization takes). Weights are int8, symmetric,
per channel, for both.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mrdeploy._atomic import run_tempdir
from mrdeploy.calibration.ranges import _quiet_ort, ort_method
from mrdeploy.errors import CalibrationError

TARGETS = ("onnxruntime", "tensorrt")


def activation_type(target: str):
    from onnxruntime.quantization import QuantType

    if target not in TARGETS:
        raise CalibrationError(f"calibration target {target!r}: expected one of {', '.join(TARGETS)}")
    return QuantType.QUInt8 if target == "onnxruntime" else QuantType.QInt8


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
    op_types: Sequence[str] = ("Conv", "MatMul", "Gemm"),
    exclude: Sequence[str] = (),
) -> Path:
    """Quantize ``model_path`` with the given ranges into ``out_path`` (QDQ format)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    symmetric = target == "tensorrt"
    extra = {
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        "DedicatedQDQPair": symmetric,  # TensorRT fuses per consumer
    }
    with tempfile.TemporaryDirectory(prefix="mrdeploy-qdq-", dir=run_tempdir()) as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(tensors_data(ranges, method), cache)
        try:
            with _quiet_ort():
                quantize_static(
                    str(model_path),
                    str(out_path),
                    None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types),
                    per_channel=True,
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
