"""Read an ONNX model from anywhere and describe it as a ModelInfo, plus which input dims are fixed.

The ModelInfo comes from the model's ``mrdeploy.*`` metadata_props when it has them (``mrdeploy export``
writes them); otherwise it is inferred:

- image inputs are the rank-4 float inputs (NCHW; channels from dim 1, which must be fixed);
- height/width are dynamic when dims 2/3 have a ``dim_param`` or no ``dim_value``, whatever their names;
- an output is spatial when its last two dims carry the same symbols as an image input's H/W (stride 1),
  or when named by ``spatial_outputs`` (``NAME`` or ``NAME:STRIDE``);
- divisor, mean/std, valid size range come from the flags (defaults: divisor 1, no normalization, no range).

Flags override the metadata where both are given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mrdeploy.errors import ExportError, ProfileError
from mrdeploy.runtime.modelinfo import InputInfo, ModelInfo, OutputInfo
from mrdeploy.runtime.profiles import Profile

HW = tuple[int, int]

_FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


@dataclass
class SourceModel:
    """An ONNX model as the builder sees it: where it is, its ModelInfo and its declared input shapes."""

    path: Path
    proto: object  # onnx.ModelProto
    info: ModelInfo
    # input name -> declared dims: an int where fixed, the symbol (str) or None where dynamic
    dims: dict[str, list[int | str | None]] = field(default_factory=dict)
    from_metadata: bool = False
    external_data: bool = False  # weights stored beside the .onnx file (the bundle gets them inline)

    @property
    def node_count(self) -> int:
        return len(self.proto.graph.node)

    @property
    def channels(self) -> dict[str, int]:
        return {i.name: i.channels for i in self.info.inputs}

    def fixed(self, name: str) -> list[int | None]:
        """Declared dims of input ``name``: the int where fixed, None where dynamic."""
        return [d if isinstance(d, int) else None for d in self.dims[name]]


def load_onnx(path: str | os.PathLike):
    """``onnx.load`` with a clear error for a missing, corrupt or truncated file."""
    return _load(path)[0]


def _load(path: str | os.PathLike):
    """(model with its external data loaded, whether the file keeps weights in external data)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX model {path}: no such file")
    size = path.stat().st_size
    external = False
    try:
        model = onnx.load(str(path), load_external_data=False)
        external = uses_external_data(model)
        if external:
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(path.parent))
    except Exception as e:  # protobuf DecodeError, external data missing, ...
        raise ExportError(
            f"ONNX model {path} ({size} bytes) cannot be read: corrupt or truncated file? "
            f"({type(e).__name__}: {str(e).strip()[:200]})"
        ) from None
    if not model.graph.node or not model.graph.output:
        raise ExportError(
            f"ONNX model {path} ({size} bytes) cannot be read: expected a graph with nodes and outputs, "
            f"got {len(model.graph.node)} nodes and {len(model.graph.output)} outputs (corrupt or truncated file?)"
        )
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ExportError(f"ONNX model {path} is not a valid ONNX model: {str(e).strip()[:300]}") from None
    return model, external


def uses_external_data(model) -> bool:
    """Whether any initializer of ``model`` (as stored on disk) lives in an external data file."""
    from onnx import TensorProto

    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def _dims(value_info) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def graph_inputs(model) -> list:
    """The model's real inputs (initializers listed as inputs by old exporters left out)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _parse_spatial_outputs(items: Iterable[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or ():
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            name, _, stride = part.partition(":")
            try:
                out[name] = int(stride) if stride else 1
            except ValueError:
                raise ExportError(f"--spatial-outputs {part!r}: expected NAME or NAME:STRIDE (e.g. mask:4)") from None
    return out


def _norm(values: Sequence[float] | str | None, what: str, channels: int) -> tuple[float, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        try:
            values = [float(v) for v in values.replace(",", " ").split()]
        except ValueError:
            raise ExportError(f"--{what} {values!r}: expected numbers like 0.485,0.456,0.406") from None
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ExportError(f"--{what}: expected {channels} values (one per channel) or 1, got {len(values)}")
    if what == "std" and any(v <= 0 for v in values):
        raise ExportError(f"--std: expected positive values, got {list(values)}")
    return values


def _size(v: int | Sequence[int] | str | None, what: str) -> HW | None:
    if v is None:
        return None
    if isinstance(v, str):
        h, _, w = v.lower().partition("x")
        try:
            return (int(h), int(w or h))
        except ValueError:
            raise ExportError(f"--{what} {v!r}: expected N or HxW") from None
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def infer_model_info(model, name: str = "model", spatial_outputs: Iterable[str] | None = None) -> ModelInfo:
    """ModelInfo from the graph alone (no metadata): see the module docstring for the rules."""
    inputs: list[InputInfo] = []
    symbols: dict[str, tuple] = {}
    for vi in graph_inputs(model):
        tt = vi.type.tensor_type
        dims = _dims(vi)
        if len(dims) != 4 or tt.elem_type not in _FLOAT_TYPES:
            raise ExportError(
                f"input {vi.name!r}: expected an NCHW float image input (rank 4, float), got rank {len(dims)} "
                f"with ONNX elem_type {tt.elem_type}; mrdeploy builds models whose inputs are all images"
            )
        if not isinstance(dims[1], int):
            raise ExportError(
                f"input {vi.name!r}: expected a fixed channel count in dim 1 (NCHW), got {dims[1]!r}"
            )
        inputs.append(InputInfo(name=vi.name, channels=dims[1], dtype=_FLOAT_TYPES[tt.elem_type]))
        symbols[vi.name] = (dims[2], dims[3])
    if not inputs:
        raise ExportError("the model has no inputs")
    forced = _parse_spatial_outputs(spatial_outputs)
    outputs = []
    for vo in model.graph.output:
        dims = _dims(vo)
        spatial = False
        if vo.name in forced:
            spatial = True
        elif len(dims) >= 3:
            last = tuple(dims[-2:])
            spatial = any(
                all(isinstance(s, str) for s in hw) and last == hw for hw in symbols.values()
            )
        outputs.append(OutputInfo(name=vo.name, spatial=spatial, stride=forced.get(vo.name, 1)))
    task = "segmentation" if any(o.spatial for o in outputs) else (
        "classification" if all(len(_dims(o)) == 2 for o in model.graph.output) else "dense"
    )
    return ModelInfo(name=name, task=task, inputs=inputs, outputs=outputs)


def read_model(
    path: str | os.PathLike,
    *,
    divisor: int | None = None,
    spatial_outputs: Iterable[str] | None = None,
    mean: Sequence[float] | str | None = None,
    std: Sequence[float] | str | None = None,
    min_size: int | Sequence[int] | str | None = None,
    max_size: int | Sequence[int] | str | None = None,
) -> SourceModel:
    """Load ``path`` and describe it: metadata if present, else inferred; flags override either."""
    path = Path(path)
    model, external = _load(path)
    props = {p.key: p.value for p in model.metadata_props}
    try:
        info = ModelInfo.from_metadata_props(props)
    except Exception as e:
        raise ExportError(f"ONNX model {path}: mrdeploy metadata is unreadable ({e})") from None
    from_metadata = info is not None
    real_inputs = graph_inputs(model)
    if info is None:
        info = infer_model_info(model, name=path.stem, spatial_outputs=spatial_outputs)
    else:
        names = [i.name for i in real_inputs]
        if sorted(i.name for i in info.inputs) != sorted(names):
            raise ExportError(
                f"ONNX model {path}: metadata names inputs {[i.name for i in info.inputs]} "
                f"but the graph has {names}"
            )
        forced = _parse_spatial_outputs(spatial_outputs)
        out_names = [o.name for o in model.graph.output]
        for o in forced:
            if o not in out_names:
                raise ExportError(f"--spatial-outputs {o!r}: the model has no such output (outputs: {out_names})")
        info.outputs = [
            replace(o, spatial=True, stride=forced[o.name]) if o.name in forced else o for o in info.outputs
        ]
    if not from_metadata:
        unknown = [o for o in _parse_spatial_outputs(spatial_outputs) if o not in [x.name for x in info.outputs]]
        if unknown:
            raise ExportError(
                f"--spatial-outputs {unknown[0]!r}: the model has no such output "
                f"(outputs: {[o.name for o in info.outputs]})"
            )
    lo, hi = _size(min_size, "min-size"), _size(max_size, "max-size")
    new_inputs = []
    for inp in info.inputs:
        changes: dict = {}
        if divisor is not None:
            if int(divisor) < 1:
                raise ExportError(f"--divisor: expected a positive integer, got {divisor}")
            if from_metadata and int(divisor) % max(1, inp.divisor or 1):
                raise ExportError(
                    f"--divisor {divisor} conflicts with {path}'s metadata: input {inp.name!r} takes only "
                    f"multiples of {inp.divisor}; expected a multiple of {inp.divisor} (or leave --divisor out)"
                )
            changes["divisor"] = int(divisor)
        if mean is not None:
            changes["mean"] = _norm(mean, "mean", inp.channels)
        if std is not None:
            changes["std"] = _norm(std, "std", inp.channels)
        if lo is not None:
            changes["min_size"] = lo
        if hi is not None:
            changes["max_size"] = hi
        new_inputs.append(replace(inp, **changes))
    info.inputs = new_inputs
    for inp in info.inputs:
        if inp.min_size and inp.max_size and (inp.min_size[0] > inp.max_size[0] or inp.min_size[1] > inp.max_size[1]):
            raise ExportError(
                f"input {inp.name!r}: valid size range min {inp.min_size} is above max {inp.max_size}"
            )
    dims = {vi.name: _dims(vi) for vi in real_inputs}
    return SourceModel(
        path=path, proto=model, info=info, dims=dims, from_metadata=from_metadata, external_data=external
    )


def check_against_model(source: SourceModel, profile: Profile) -> None:
    """A profile must agree with the dims the model fixes (batch, channels, a fixed H/W)."""
    for name, r in profile.inputs.items():
        fixed = source.fixed(name)
        for axis, (label, lo, hi) in enumerate(zip(("batch", "channels", "height", "width"), r.min, r.max)):
            want = fixed[axis]
            if want is None:
                continue
            if lo != want or hi != want:
                shape = "x".join("?" if f is None else str(f) for f in fixed)
                got = f"{lo}" if lo == hi else f"{lo}-{hi}"
                raise ProfileError(
                    f"profile {profile.name!r}, input {name!r}: the model fixes the input shape to {shape} "
                    f"({label} {want}), the profile asks for {label} {got}"
                )


def divisors(info: ModelInfo) -> dict[str, int]:
    return {i.name: i.divisor or 1 for i in info.inputs}


def size_limits(info: ModelInfo) -> tuple[Mapping[str, HW | None], Mapping[str, HW | None]]:
    return ({i.name: i.min_size for i in info.inputs}, {i.name: i.max_size for i in info.inputs})
