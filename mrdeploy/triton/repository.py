"""``mrdeploy triton BUNDLE -o REPO``: a Triton model repository for a bundle.

Layout (``M`` is the bundle's model name)::

    REPO/mrdeploy-triton.json        what was written, from which bundle (Triton ignores files here)
    REPO/M/config.pbtxt              the front model (Python backend): any served size, H and W -1
    REPO/M/1/model.py                mrdeploy.triton.front: mrdeploy's dispatch
    REPO/M/1/mrdeploy_front.json     mode, inputs, outputs, the per-profile model of each profile
    REPO/M/1/bundle/manifest.json    the bundle's manifest (embedded: and its engines)
    REPO/M_<profile>/config.pbtxt    one model per profile (not in embedded mode):
    REPO/M_<profile>/1/model.onnx    onnxruntime_onnx, or model.plan for tensorrt_plan

Every config.pbtxt is built as Triton's ModelConfig protobuf and parsed back with it before the
repository is renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mrdeploy._atomic import TRITON_MARKER, atomic_dir
from mrdeploy._ort import cpu_session
from mrdeploy.errors import BundleError, InputError
from mrdeploy.runtime.manifest import MANIFEST_NAME, Manifest, ProfileEntry, verify_artifacts
from mrdeploy.triton import config as C

MARKER = TRITON_MARKER
FRONT_SPEC = "mrdeploy_front.json"


@dataclass
class Repository:
    """What ``write_repository`` wrote."""

    path: Path
    front: str  # the model clients call
    profile_models: dict[str, str] = field(default_factory=dict)  # profile -> Triton model (bls mode)
    embedded: bool = False

    @property
    def models(self) -> list[str]:
        return [self.front, *self.profile_models.values()]


def _model_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", text).strip(".") or "model"
    return name


def _io(path: Path) -> tuple[list[tuple], list[tuple]]:
    """(name, shape, numpy dtype name) of every input and output of an ONNX model (shape: None = dynamic)."""
    from mrdeploy.runtime.backends.base import numpy_dtype

    try:
        sess = cpu_session(path)
    except Exception as e:
        raise BundleError(f"{path}: ONNX Runtime cannot read it: {str(e).strip()[:300]}") from None

    def rows(items):
        return [(i.name, [d if isinstance(d, int) else None for d in i.shape], numpy_dtype(i.type).name)
                for i in items]

    return rows(sess.get_inputs()), rows(sess.get_outputs())


def _batch_max(entry: ProfileEntry) -> int:
    return min(r.max[0] for r in entry.profile.inputs.values())


def _check_args(manifest: Manifest, instances, kind, max_batch, max_delay_ms) -> None:
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise InputError(f"instances must be an integer of at least 1, got {instances!r}")
    if kind not in C.KINDS:
        raise InputError(f"kind must be one of {', '.join(C.KINDS)}, got {kind!r}")
    if not max_delay_ms >= 0:
        raise InputError(f"max_delay_ms must be >= 0, got {max_delay_ms!r}")
    if max_batch is not None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"max_batch must be an integer of at least 1, got {max_batch!r}")
        short = [e for e in manifest.profiles if _batch_max(e) < max_batch]
        if short:
            have = ", ".join(
                f"{e.name}: batch {'/'.join(f'{r.min[0]}-{r.max[0]}' for r in e.profile.inputs.values())}"
                for e in short
            )
            raise InputError(
                f"max_batch {max_batch} is more than the bundle's profiles serve ({have}); "
                f"rebuild the bundle with batch ranges (`mrdeploy build-engine ... --batch 1-{max_batch}@1`) "
                "or ask for a smaller max_batch"
            )
    if kind == "cpu":
        trt = [e.name for e in manifest.profiles if e.backend == "tensorrt"]
        if trt:
            raise InputError(f"profiles {', '.join(trt)} are TensorRT plans: they need kind 'gpu', got 'cpu'")


def _profile_model(tmp: Path, bundle: Path, name: str, entry: ProfileEntry, max_batch, instances, kind,
                   max_delay_ms, io_source: Path, threads) -> dict[str, str]:
    """Write one per-profile model; returns its input dtypes."""
    platform, backend, filename = C.PLATFORMS[entry.backend]
    art = bundle / entry.artifact
    ins, outs = _io(art if entry.backend == "onnxruntime" else io_source)
    batch_dynamic = all(shape and shape[0] is None for _, shape, _ in ins)
    first = {n: r for n, r in entry.profile.inputs.items()}
    if batch_dynamic and all(r.min[0] == 1 for r in first.values()):
        mbs = max_batch if max_batch is not None else _batch_max(entry)
        cut = 1
    else:  # a fixed batch axis or a batch range not starting at 1: the batch axis is written out
        mbs, cut = 0, 0
    tin = []
    for n, r in first.items():
        dims = [lo if lo == hi else -1 for lo, hi in zip(r.min, r.max)]
        tin.append(C.Tensor(n, dict((a, t) for a, _, t in ins).get(n, "float32"), tuple(dims[cut:])))
    tout = [C.Tensor(n, t, tuple(-1 if d is None else d for d in shape)[cut:]) for n, shape, t in outs]
    params = {}
    if entry.backend == "onnxruntime":
        from mrdeploy.runtime.backends.onnxruntime import _options  # flat keys or under "session"

        n_threads = threads or _options(entry).get("intra_op_num_threads")
        if n_threads:
            params["intra_op_thread_count"] = str(int(n_threads))
    cfg = C.model_config(
        name, inputs=tin, outputs=tout, max_batch_size=mbs, instances=instances, kind=kind,
        platform=platform, backend=backend, filename=filename,
        max_delay_us=round(max_delay_ms * 1e3) if mbs > 1 else None, parameters=params,
    )
    C.check_config(cfg, f"{name}/config.pbtxt")
    (tmp / name / "1").mkdir(parents=True)
    (tmp / name / "config.pbtxt").write_text(C.to_pbtxt(cfg))
    shutil.copyfile(art, tmp / name / "1" / filename)
    for f in entry.files:  # shared weights (ONNX external data): found relative to the graph, as in the bundle
        rel = Path(os.path.relpath(f["path"], Path(entry.artifact).parent))
        if rel.parts[0] == "..":
            raise InputError(f"profile {entry.name!r}: file {f['path']} is not beside its graph {entry.artifact}")
        (tmp / name / "1" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle / f["path"], tmp / name / "1" / rel)
    return {t.name: t.dtype for t in tin}


def write_repository(
    bundle: str | Path,
    out: str | Path,
    *,
    instances: int = 1,
    kind: str = "cpu",
    max_batch: int | None = None,
    max_delay_ms: float = 2.0,
    embedded: bool = False,
    threads: int | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Repository:
    """Write the Triton model repository of ``bundle`` to ``out`` (atomically) and return what it holds.

    instances, kind: ``instance_group`` of every model (count, KIND_CPU / KIND_GPU).
    max_batch:       ``max_batch_size`` of the per-profile models (default: each profile's batch max);
                     more than a profile serves is an error.
    max_delay_ms:    ``dynamic_batching.max_queue_delay_microseconds`` of the per-profile models.
    embedded:        only the front model, running mrdeploy's runtime on the bundle's engines itself.
    threads:         intra-op threads per engine (ONNX Runtime models, and the embedded runtime).
    overwrite:       replace ``out`` when it is a repository mrdeploy wrote (anything else is refused).
    """
    bundle = Path(bundle)
    manifest = Manifest.read(bundle)
    verify_artifacts(bundle, manifest, source=False)
    _check_args(manifest, instances, kind, max_batch, max_delay_ms)
    other = [f"{e.name} ({e.backend})" for e in manifest.profiles if e.backend not in C.PLATFORMS]
    if other and not embedded:
        raise InputError(
            f"profiles {', '.join(other)} have no Triton platform: per-profile models are written for "
            f"{', '.join(C.PLATFORMS)} profiles; use the embedded front model (--embedded), which serves the bundle itself"
        )
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (overwrite and (out / MARKER).is_file()):
            what = "a repository mrdeploy wrote: pass overwrite=True (--force)" if (out / MARKER).is_file() \
                else "not a repository mrdeploy wrote, so it is left alone"
            raise InputError(f"{out} exists and is not empty ({what}); choose another output")
    front = _model_name(name or manifest.model.name or bundle.name)
    io_source = bundle / manifest.source["artifact"]
    if not io_source.is_file():
        onnx_entries = [e for e in manifest.profiles if e.backend == "onnxruntime"]
        if not onnx_entries and not embedded:
            raise BundleError(f"{io_source} is missing: the output shapes of TensorRT plans are read from it")
        io_source = bundle / onnx_entries[0].artifact if onnx_entries else io_source
    repo = Repository(out, front, embedded=embedded)
    with atomic_dir(out, "triton") as tmp:
        input_dtypes: dict[str, dict[str, str]] = {}
        if not embedded:
            for e in manifest.profiles:
                model = _model_name(f"{front}_{e.name}")
                input_dtypes[e.name] = _profile_model(tmp, bundle, model, e, max_batch, instances, kind,
                                                      max_delay_ms, io_source, threads)
                repo.profile_models[e.name] = model
        ins, outs = _io(io_source) if io_source.is_file() else _io(bundle / manifest.profiles[0].artifact)
        channels = {i.name: i.channels for i in manifest.model.inputs}
        tin = [C.Tensor(n, t, (-1, channels.get(n, shape[1] or -1), -1, -1)) for n, shape, t in ins]
        tout = [C.Tensor(n, t, tuple(-1 if i == 0 or d is None else d for i, d in enumerate(shape)))
                for n, shape, t in outs]
        cfg = C.model_config(
            front, inputs=tin, outputs=tout, max_batch_size=0, instances=instances,
            kind=kind if embedded else "cpu", backend="python",
            parameters={"mrdeploy_mode": "embedded" if embedded else "bls", "mrdeploy_bundle": manifest.model.name},
        )
        C.check_config(cfg, f"{front}/config.pbtxt")
        version = tmp / front / "1"
        (version / "bundle").mkdir(parents=True)
        (tmp / front / "config.pbtxt").write_text(C.to_pbtxt(cfg))
        shutil.copyfile(Path(__file__).with_name("front.py"), version / "model.py")
        shutil.copyfile(bundle / MANIFEST_NAME, version / "bundle" / MANIFEST_NAME)
        if embedded:
            for e in manifest.profiles:  # each engine's files: its graph, an IR's .bin, shared weights
                for rel in [e.artifact, *(f["path"] for f in e.files)]:
                    (version / "bundle" / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(bundle / rel, version / "bundle" / rel)
        spec = {
            "mode": "embedded" if embedded else "bls",
            "inputs": [t.name for t in tin],
            "outputs": [t.name for t in tout],
            "models": repo.profile_models,
            "input_dtypes": input_dtypes,
            "threads": threads,
        }
        (version / FRONT_SPEC).write_text(json.dumps(spec, indent=2) + "\n")
        (tmp / MARKER).write_text(json.dumps({
            "bundle": str(bundle.resolve()), "model": manifest.model.name, "front": front,
            "mode": spec["mode"], "models": repo.models,
        }, indent=2) + "\n")
        for cfg_path in tmp.glob("*/config.pbtxt"):  # what Triton will read, parsed back with its schema
            C.read_config(cfg_path)
    return repo


def read_repository(path: str | Path) -> Repository:
    """The Repository of a directory written by ``write_repository`` (BundleError otherwise)."""
    path = Path(path)
    marker = path / MARKER
    if not marker.is_file():
        raise BundleError(f"{path} is not a Triton repository written by mrdeploy triton (no {MARKER})")
    info = json.loads(marker.read_text())
    spec = json.loads((path / info["front"] / "1" / FRONT_SPEC).read_text())
    return Repository(path, info["front"], dict(spec["models"]), spec["mode"] == "embedded")
