"""The example models, by short name: how to build them and how to export them.

``EXAMPLES[name]`` is an :class:`ExampleSpec` (factory string as ``mrdeploy export`` takes it, model
kwargs, example input shape(s), export settings and the checkpoint path the training script writes).
``build_example(name)`` returns the model (with its checkpoint when that file exists);
``export_example(name, out)`` exports it with :func:`mrdeploy.exporter.export`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = Path("examples/checkpoints")
DIGIT_LABELS = [str(i) for i in range(10)]
SHAPE_LABELS = ["background", "disc", "rectangle", "triangle"]
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ExampleSpec:
    name: str
    factory: str  # "examples/<file>.py:<factory>", relative to the repository root
    input_shape: tuple[int, ...] | dict[str, tuple[int, ...]]
    model_args: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    labels: list[str] | None = None
    output_names: list[str] = field(default_factory=lambda: ["logits"])
    spatial_outputs: dict[str, int] | None = None  # output name -> stride
    divisor: int | dict[str, int] = 1
    min_size: int | dict[str, int] | None = None
    max_size: int | dict[str, int] | None = None
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    train_sizes: tuple[int, int] = (32, 128)  # the range of sizes the training script uses

    @property
    def checkpoint(self) -> Path:
        """Relative to the repository root; written by examples/train*.py."""
        return CHECKPOINTS / f"{self.name}.pt"

    @property
    def factory_path(self) -> str:
        """The factory string with an absolute file path (works from any working directory)."""
        file, _, fn = self.factory.rpartition(":")
        return f"{ROOT / file}:{fn}"

    def export_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for mrdeploy.exporter.export, apart from model/shape/output."""
        return dict(
            model_args=dict(self.model_args),
            divisor=self.divisor,
            min_size=self.min_size,
            max_size=self.max_size,
            mean=self.mean,
            std=self.std,
            task=self.task,
            labels=self.labels,
            name=self.name,
            output_names=list(self.output_names),
            spatial_outputs=self.spatial_outputs,
        )


EXAMPLES: dict[str, ExampleSpec] = {
    "vit": ExampleSpec(
        name="vit",
        factory="examples/resformer.py:resformer_tiny",
        model_args={"num_classes": 10},
        input_shape=(1, 3, 128, 128),
        labels=DIGIT_LABELS,
        divisor=8,  # patch size
        min_size=32,
        max_size=512,  # 64 x 64 = 4096 tokens; 256 px already gives 1024
    ),
    "cnn": ExampleSpec(
        name="cnn",
        factory="examples/two_stream_cnn.py:two_stream_cnn",
        model_args={"num_classes": 10},
        input_shape=(1, 3, 128, 128),
        labels=DIGIT_LABELS,
        divisor=16,  # fine stream and coarse stream both reach 1/16 exactly
        min_size=32,
        max_size=1024,
    ),
    "seg": ExampleSpec(
        name="seg",
        factory="examples/hrda_seg.py:hrda_seg",
        model_args={"num_classes": 4},
        input_shape=(1, 3, 128, 128),
        task="segmentation",
        labels=SHAPE_LABELS,
        output_names=["mask_logits"],
        spatial_outputs={"mask_logits": 1},
        divisor=16,  # context branch at 1/2, its encoder at 1/8 of that
        min_size=32,
        max_size=1024,
    ),
    "tracker": ExampleSpec(
        name="tracker",
        factory="examples/tracker.py:siamese_tracker",
        input_shape={"template": (1, 3, 128, 128), "search": (1, 3, 256, 256)},
        task="dense",
        output_names=["response"],
        spatial_outputs={"response": 8},
        divisor=8,
        min_size={"template": 112, "search": 224},
        max_size={"template": 128, "search": 384},
        train_sizes=(112, 384),
    ),
}


def get_spec(name: str) -> ExampleSpec:
    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; expected one of {', '.join(EXAMPLES)}")
    return EXAMPLES[name]


def checkpoint_path(name: str) -> Path | None:
    """Absolute path of the example's checkpoint, or None when it has not been trained yet."""
    path = ROOT / get_spec(name).checkpoint
    return path if path.is_file() else None


def build_example(name: str, checkpoint: bool = True):
    """The example as an eval-mode nn.Module, with its checkpoint loaded when the file exists."""
    from mrdeploy.exporter.loading import load_model

    spec = get_spec(name)
    ckpt = checkpoint_path(name) if checkpoint else None
    return load_model(spec.factory_path, spec.model_args, ckpt)


def export_example(name: str, out_path: str | Path, validate: bool = False, **overrides) -> Path:
    """Export the example (with its checkpoint when present) to ``out_path``; returns the path."""
    from mrdeploy.exporter import export

    spec = get_spec(name)
    kwargs = spec.export_kwargs()
    kwargs["checkpoint"] = checkpoint_path(name)
    kwargs.update(overrides)
    result = export(spec.factory_path, spec.input_shape, out_path, validate=validate, **kwargs)
    return result.path


def cli_args(name: str, out: str | Path) -> list[str]:
    """The ``mrdeploy export`` arguments that export this example (paths relative to the repo root)."""
    spec = get_spec(name)
    shapes = spec.input_shape if isinstance(spec.input_shape, dict) else {None: spec.input_shape}

    def fmt(v) -> str:
        return "x".join(map(str, v)) if isinstance(v, tuple | list) else str(v)

    def per_input(flag: str, value) -> list[str]:
        if value is None:
            return []
        if isinstance(value, dict):
            return [a for n, v in value.items() for a in (flag, f"{n}={fmt(v)}")]
        return [flag, fmt(value)]

    args = [spec.factory, "-o", str(out)]
    for n, s in shapes.items():
        args += ["--input-shape", fmt(s) if n is None else f"{n}={fmt(s)}"]
    for k, v in spec.model_args.items():
        args += ["--model-arg", f"{k}={v}"]
    args += per_input("--divisor", spec.divisor) + per_input("--min-size", spec.min_size)
    args += per_input("--max-size", spec.max_size)
    args += ["--mean", ",".join(map(str, spec.mean)), "--std", ",".join(map(str, spec.std))]
    args += ["--task", spec.task, "--name", spec.name, "--output-names", ",".join(spec.output_names)]
    for n, stride in (spec.spatial_outputs or {}).items():
        args += ["--spatial-output", f"{n}:{stride}"]
    if (ROOT / spec.checkpoint).is_file():
        args += ["--checkpoint", spec.checkpoint.as_posix()]
    return args


if __name__ == "__main__":  # print the mrdeploy export command of each example (run from the repo root)
    import shlex
    import sys

    for example in sys.argv[1:] or list(EXAMPLES):
        print(shlex.join(["mrdeploy", "export", *cli_args(example, f"build/{example}.onnx")]))
