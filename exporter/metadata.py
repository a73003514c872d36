"""ModelInfo (mrdeploy.runtime.modelinfo) for an export, written into the ONNX ``metadata_props``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mrdeploy.errors import ExportError
from mrdeploy.runtime.modelinfo import TASKS, InputInfo, ModelInfo, OutputInfo


def build_model_info(
    name: str,
    task: str,
    example: Mapping[str, tuple[int, ...]],
    divisor: Mapping[str, int],
    min_size: Mapping[str, tuple[int, int] | None],
    max_size: Mapping[str, tuple[int, int] | None],
    mean: Mapping[str, Sequence[float] | None],
    std: Mapping[str, Sequence[float] | None],
    outputs: Sequence[OutputInfo],
    labels: Sequence[str] | None,
) -> ModelInfo:
    if task not in TASKS:
        raise ExportError(f"task {task!r} is not one of {', '.join(TASKS)}")
    inputs = []
    for n, shape in example.items():
        c = shape[1]
        for what, vals in (("mean", mean[n]), ("std", std[n])):
            if vals is not None and len(vals) not in (1, c):
                raise ExportError(f"{what} of input {n!r} has {len(vals)} values, expected 1 or {c} (its channels)")
        if std[n] is not None and any(v == 0 for v in std[n]):
            raise ExportError(f"std of input {n!r} contains 0: {list(std[n])}")
        inputs.append(
            InputInfo(
                name=n,
                channels=c,
                divisor=divisor[n],
                min_size=min_size[n],
                max_size=max_size[n],
                mean=_per_channel(mean[n], c),
                std=_per_channel(std[n], c),
            )
        )
    return ModelInfo(name=name, task=task, inputs=inputs, outputs=list(outputs), labels=list(labels) if labels else None)


def _per_channel(vals: Sequence[float] | None, c: int) -> tuple[float, ...] | None:
    if vals is None:
        return None
    vals = tuple(float(v) for v in vals)
    return vals * c if len(vals) == 1 else vals


def write_metadata(model_proto, info: ModelInfo) -> None:
    """Replace any ``mrdeploy.*`` metadata_props with ``info``; other keys are kept."""
    from mrdeploy.runtime.modelinfo import METADATA_PREFIX

    keep = [(p.key, p.value) for p in model_proto.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model_proto.metadata_props[:]
    for k, v in keep + sorted(info.to_metadata_props().items()):
        prop = model_proto.metadata_props.add()
        prop.key, prop.value = k, v


def read_metadata(model_proto) -> ModelInfo | None:
    return ModelInfo.from_metadata_props({p.key: p.value for p in model_proto.metadata_props})
