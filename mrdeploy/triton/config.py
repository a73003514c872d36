"""Triton ``config.pbtxt`` files built as Triton's own ``ModelConfig`` protobuf (the one tritonclient
ships), written in protobuf text format and checked by parsing them back with that schema.

Nothing here is free text: a field name or enum value Triton does not know fails in ``to_pbtxt`` /
``check_pbtxt`` instead of at server start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mrdeploy.errors import BackendUnavailable, MrdeployError

KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
# numpy dtype name -> Triton DataType
DTYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
    "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}
# bundle backend -> (Triton platform, Triton backend, model file name)
PLATFORMS = {
    "onnxruntime": ("onnxruntime_onnx", "onnxruntime", "model.onnx"),
    "tensorrt": ("tensorrt_plan", "tensorrt", "model.plan"),
}


def pb():
    """Triton's ModelConfig protobuf module (from tritonclient)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise BackendUnavailable(
            f"writing a Triton repository needs tritonclient ({e}): pip install 'mrdeploy[triton]'"
        ) from None
    return model_config_pb2


@dataclass(frozen=True)
class Tensor:
    """One input or output of a Triton model: dims exclude the batch axis when max_batch_size > 0."""

    name: str
    dtype: str  # numpy name
    dims: tuple[int, ...]


def _tensors(msg_list, tensors: Sequence[Tensor], mc) -> None:
    for t in tensors:
        if t.dtype not in DTYPES:
            raise MrdeployError(f"tensor {t.name!r}: dtype {t.dtype} has no Triton type ({', '.join(DTYPES)})")
        m = msg_list.add()
        m.name = t.name
        m.data_type = mc.DataType.Value(DTYPES[t.dtype])
        m.dims.extend(int(d) for d in t.dims)


def model_config(
    name: str,
    *,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    max_batch_size: int,
    instances: int,
    kind: str,
    backend: str | None = None,
    platform: str | None = None,
    max_delay_us: int | None = None,
    parameters: Mapping[str, str] | None = None,
    filename: str | None = None,
):
    """A ``ModelConfig`` message. ``max_delay_us`` not None turns on dynamic batching."""
    mc = pb()
    cfg = mc.ModelConfig()
    cfg.name = name
    if platform:
        cfg.platform = platform
    if backend:
        cfg.backend = backend
    if filename:
        cfg.default_model_filename = filename
    cfg.max_batch_size = int(max_batch_size)
    _tensors(cfg.input, inputs, mc)
    _tensors(cfg.output, outputs, mc)
    group = cfg.instance_group.add()
    group.kind = mc.ModelInstanceGroup.Kind.Value(KINDS[kind])
    group.count = int(instances)
    if max_delay_us is not None:
        cfg.dynamic_batching.max_queue_delay_microseconds = int(max_delay_us)
    for key, value in (parameters or {}).items():
        cfg.parameters[key].string_value = str(value)
    return cfg


def to_pbtxt(cfg) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(cfg)


def check_config(cfg, where: str = "config.pbtxt") -> None:
    """The rules Triton applies when it loads a config, beyond the schema: raise MrdeployError."""
    if not cfg.name:
        raise MrdeployError(f"{where}: the model has no name")
    if cfg.max_batch_size < 0:
        raise MrdeployError(f"{where}: max_batch_size must be >= 0, got {cfg.max_batch_size}")
    if not (cfg.backend or cfg.platform):
        raise MrdeployError(f"{where}: neither backend nor platform is set")
    if not cfg.input or not cfg.output:
        raise MrdeployError(f"{where}: a model needs inputs and outputs")
    for t in (*cfg.input, *cfg.output):
        if not t.dims:
            raise MrdeployError(f"{where}: tensor {t.name!r} has no dims")
        if any(d < -1 or d == 0 for d in t.dims):
            raise MrdeployError(f"{where}: tensor {t.name!r} has dims {list(t.dims)}: each is -1 or >= 1")
        if t.data_type == 0:
            raise MrdeployError(f"{where}: tensor {t.name!r} has no data_type")
    if cfg.HasField("dynamic_batching") and cfg.max_batch_size < 1:
        raise MrdeployError(f"{where}: dynamic_batching needs max_batch_size >= 1")
    for g in cfg.instance_group:
        if g.count < 1:
            raise MrdeployError(f"{where}: instance_group count must be >= 1, got {g.count}")


def parse_pbtxt(text: str, where: str = "config.pbtxt"):
    """Parse a config.pbtxt with Triton's schema (unknown fields are errors) and check it."""
    from google.protobuf import text_format

    cfg = pb().ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise MrdeployError(f"{where}: not a valid Triton ModelConfig: {e}") from None
    check_config(cfg, where)
    return cfg


def read_config(path: str | Path):
    """Parse ``path`` (a config.pbtxt) with Triton's schema; its model name must be its directory's."""
    path = Path(path)
    cfg = parse_pbtxt(path.read_text(), str(path))
    if cfg.name != path.parent.name:
        raise MrdeployError(f"{path}: model name {cfg.name!r} differs from its directory {path.parent.name!r}")
    return cfg
