"""Reference models that parity and bench compare a bundle with: the dynamic ONNX model (ONNX Runtime)
and the PyTorch model (``module:factory`` or ``path.py:factory`` plus a checkpoint).

Both take and return numpy: ``ref.run({"input": x}) -> {"logits": y}``. torch is imported only when a
PyTorch reference is asked for; ONNX Runtime only when an ONNX one is.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrdeploy._ort import cpu_session
from mrdeploy.errors import InputError


class OnnxReference:
    """An ONNX Runtime CPU session over a model with dynamic shapes (the bundle's source model.onnx)."""

    kind = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spin: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"reference ONNX model {self.path}: no such file")
        try:  # spin=False: no busy-waiting after a call, another model timed next gets the cores
            self.session = cpu_session(self.path, threads, spin=spin)
        except Exception as e:  # onnxruntime raises its own exception types
            raise InputError(f"reference ONNX model {self.path}: ONNX Runtime cannot load it ({e})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.label = "onnx fp32"

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"reference ONNX model {self.path}: expected inputs {self.input_names}, missing {missing}")
        outs = self.session.run(None, {n: np.ascontiguousarray(feeds[n]) for n in self.input_names})
        return dict(zip(self.output_names, outs))


class TorchReference:
    """The PyTorch model in eval mode, called under ``torch.inference_mode``; outputs named like the ONNX
    model's (by position)."""

    kind = "pytorch"

    def __init__(
        self,
        spec,
        input_names: Sequence[str],
        output_names: Sequence[str],
        checkpoint: str | os.PathLike | None = None,
        model_args: Mapping | None = None,
        threads: int | None = None,
        spin: bool = False,
    ):
        if not spin:  # before torch (and its OpenMP runtime) is first imported; see quiet_manifest()
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.spec = spec
        self.model = load_torch_model(spec, checkpoint, model_args)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.label = "pytorch fp32"
        self._torch = torch

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
        with torch.inference_mode():
            out = self.model(*args)
        if isinstance(out, Mapping):
            values = list(out.values())
        elif isinstance(out, (tuple, list)):
            values = list(out)
        else:
            values = [out]
        return {name: v.detach().float().numpy() for name, v in zip(self.output_names, values)}


def quiet_manifest(manifest):
    """A copy of ``manifest`` whose ONNX Runtime entries do not spin-wait (the bundle and ``manifest`` are
    untouched).

    Parity and bench run several models one after another on the same cores. ONNX Runtime's intra-op
    threads busy-wait after each call by default, as do PyTorch's OpenMP threads, and those spinning
    threads steal the cores from the next model (PyTorch ran ~10x slower in this state on 2 cores).
    So every ORT session made here runs with ``session.intra_op.allow_spinning=0`` and PyTorch with
    ``OMP_WAIT_POLICY=PASSIVE``.
    """
    def quiet(e):
        if e.backend != "onnxruntime":
            return e
        config = {**(e.options.get("session_config") or {}), "session.intra_op.allow_spinning": "0"}
        return dataclasses.replace(e, options={**e.options, "session_config": config})

    return dataclasses.replace(manifest, profiles=[quiet(e) for e in manifest.profiles])


@dataclass
class Subjects:
    """What parity and bench measure: the bundle's Runner and manifest, the ONNX reference and the
    PyTorch one (or None). A context manager: leaving it closes the Runner's engines."""

    bundle: Path
    manifest: object  # mrdeploy.runtime.Manifest
    runner: object  # mrdeploy.runtime.Runner
    onnx: OnnxReference
    torch: TorchReference | None
    torch_spec: object
    checkpoint: str | os.PathLike | None

    def references(self) -> dict:
        """The report's ``references``: {"onnx": path, "pytorch": spec | None, "checkpoint": path | None}."""
        return {"onnx": str(self.onnx.path), "pytorch": reference_label(self.torch_spec),
                "checkpoint": str(self.checkpoint) if self.checkpoint else None}

    def profiles(self) -> list[dict]:
        """The report's ``profiles``: name, backend, precision and the first input's min/opt/max."""
        return [{"name": e.name, "backend": e.backend, "precision": e.precision,
                 **{k: list(next(iter(e.profile.inputs.values())).to_dict()[k]) for k in ("min", "opt", "max")}}
                for e in self.manifest.profiles]

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> Subjects:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_subjects(bundle: str | os.PathLike, reference=None, checkpoint: str | os.PathLike | None = None,
                  model_args: Mapping | None = None, threads: int | None = None, spin: bool = False) -> Subjects:
    """Read the bundle and open the references and a Runner over it (``spin=False``: none of them
    spin-waits between calls, see :func:`quiet_manifest`)."""
    from mrdeploy.runtime import Manifest, Runner

    bundle = Path(bundle)
    manifest = Manifest.read(bundle)
    onnx_path, torch_spec = split_references(reference, checkpoint, bundle, manifest.source["artifact"])
    onnx_ref = OnnxReference(onnx_path, threads=threads, spin=spin)
    torch_ref = None
    if torch_spec is not None:
        torch_ref = TorchReference(torch_spec, onnx_ref.input_names, onnx_ref.output_names,
                                   checkpoint=checkpoint, model_args=model_args, threads=threads, spin=spin)
    bundle_dir = bundle.parent if bundle.is_file() else bundle
    runner = Runner(bundle_dir, manifest if spin else quiet_manifest(manifest), threads=threads)
    return Subjects(bundle, manifest, runner, onnx_ref, torch_ref, torch_spec, checkpoint)


def load_torch_model(spec: str, checkpoint: str | os.PathLike | None = None, model_args: Mapping | None = None):
    """``module:factory`` / ``path.py:factory`` (+ a checkpoint loaded with weights_only=True) -> eval model.

    Uses the exporter's loader, so parity sees exactly the model ``mrdeploy export`` saw.
    """
    from mrdeploy.exporter.loading import load_model

    model = load_model(spec, dict(model_args or {}), checkpoint)
    return model.eval()


def is_onnx_path(spec: str | os.PathLike) -> bool:
    return str(spec).lower().endswith(".onnx")


def reference_label(spec) -> str | None:
    """How a PyTorch reference is named in reports: its spec string, or the class of an nn.Module."""
    if spec is None or isinstance(spec, str):
        return spec
    return f"{type(spec).__name__} (nn.Module)"


def split_references(reference, checkpoint, bundle: Path, source_artifact: str) -> tuple[Path, object]:
    """``--reference`` values -> (the ONNX model to compare with, the PyTorch factory spec, an
    nn.Module, or None).

    At most one ``.onnx`` (default: the bundle's source model) and one ``module:factory``;
    ``--checkpoint`` needs the factory."""
    if reference is None:
        refs = []
    elif isinstance(reference, str | os.PathLike) or not isinstance(reference, list | tuple):
        refs = [reference]  # one path, spec, or an nn.Module given directly
    else:
        refs = list(reference)
    is_path = lambda r: isinstance(r, str | os.PathLike)  # noqa: E731
    onnx_specs = [r for r in refs if is_path(r) and is_onnx_path(r)]
    torch_specs = [r if not is_path(r) else str(r) for r in refs if not (is_path(r) and is_onnx_path(r))]
    if len(onnx_specs) > 1 or len(torch_specs) > 1:
        raise InputError(f"reference: expected at most one .onnx model and one module:factory, got {refs}")
    if checkpoint and not torch_specs:
        raise InputError("--checkpoint needs a PyTorch reference (--reference module:factory or path.py:factory)")
    onnx_path = Path(onnx_specs[0]) if onnx_specs else Path(bundle) / source_artifact
    return onnx_path, (torch_specs[0] if torch_specs else None)
