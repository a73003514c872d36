"""The bundle format: ``manifest.json`` and the artifacts it names (schema in docs/bundle.md).

Everyone writes and reads bundles through this module: builders make a ``Manifest`` and call
``manifest.write(tmpdir)`` inside ``atomic_dir(out)``; the runtime calls ``Manifest.read(bundle)`` and
``verify_artifacts``. Pure Python + hashlib: no numpy, no onnx.

Versioning rule: ``format_version`` is bumped whenever a reader of the old version would misread a new
bundle (a field renamed, removed or given a new meaning). Adding an optional field does not bump it.
A reader refuses any version other than the ones it knows, naming expected and got.

TensorRT entries: a plan only deserializes on the TensorRT version and GPU it was built for. Builders
record, per tensorrt profile, in ``options`` (falling back to the bundle's ``build`` block):

- ``tensorrt_version``  e.g. "10.16.1.11" (the version the plan was built with)
- ``compute_capability`` e.g. "8.6", and ``gpu`` (the device name, informative)
- ``hardware_compatibility`` "none" (default: same compute capability), "ampere_plus" (any GPU with
  compute capability >= 8.0) or "same_compute_capability"
- ``version_compatible`` bool (TensorRT's VERSION_COMPATIBLE flag: any runtime of the same major
  version, not older than the builder)

``check_tensorrt_compat`` turns those into a BundleError before a plan is deserialized.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mrdeploy._atomic import write_text_atomic
from mrdeploy.errors import BundleError
from mrdeploy.runtime.backends.registry import check_backend_name
from mrdeploy.runtime.modelinfo import ModelInfo
from mrdeploy.runtime.profiles import Profile
from mrdeploy.runtime.validate import bundle_file, check_manifest, check_relpath

FORMAT = "mrdeploy-bundle"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # backends: the registry (runtime/backends/registry.py)
POLICIES = ("pad", "resize", "letterbox", "error")
PAD_MODES = ("zero", "reflect", "edge")


def default_policy(task: str, outputs=()) -> str:
    """What the runtime does with a size no profile contains, when neither the user nor the manifest says.

    Classification: ``resize`` — padding puts a border into the global pooling and the attention, and
    moves the prediction (the demo's ViT on digits: 0.16 top-1 padded against 0.92 resized, outside
    the profiles). Segmentation and dense outputs: ``pad`` — the padded border is cropped off the output
    and the pixels inside are served at their own scale. A model with spatial outputs (a tracker's
    response map, even when its task says classification) gets ``pad`` too: resizing would change the
    outputs' geometry (16x16 where PyTorch gives 12x12).
    """
    if any(o.spatial for o in outputs):
        return "pad"
    return "resize" if task == "classification" else "pad"


@dataclass
class ProfileEntry:
    """One engine of a bundle: the profile it serves and the artifact that serves it."""

    profile: Profile
    backend: str
    precision: str
    artifact: str  # relative to the bundle directory, posix separators
    sha256: str
    options: dict = field(default_factory=dict)
    calibration: dict | None = None
    measurements: dict | None = None
    files: list[dict] = field(default_factory=list)  # further files the engine needs: [{path, sha256}]

    @property
    def name(self) -> str:
        return self.profile.name

    def to_dict(self) -> dict:
        d = self.profile.to_dict()
        d.update(
            backend=self.backend,
            precision=self.precision,
            artifact=self.artifact,
            sha256=self.sha256,
            options=dict(self.options),
            calibration=self.calibration,
            measurements=self.measurements,
        )
        if self.files:  # optional: written only when the backend has more than one file per profile
            d["files"] = [dict(f) for f in self.files]
        return d

    @classmethod
    def from_dict(cls, d: Mapping, where: str = MANIFEST_NAME) -> ProfileEntry:
        name = d.get("name") if isinstance(d, Mapping) else None
        at = f"{where}: profile {name!r}" if name else f"{where}: a profile"
        if not isinstance(d, Mapping):
            raise BundleError(f"{where}: expected each profile to be an object, got {type(d).__name__}")
        missing = [k for k in ("name", "inputs", "backend", "precision", "artifact", "sha256") if k not in d]
        if missing:
            raise BundleError(f"{at} is missing {', '.join(missing)}")
        try:
            profile = Profile.from_dict(d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(
                f"{at}: inputs must map each input to {{min, opt, max}} shapes, got {d['inputs']!r} ({e})"
            ) from None
        check_backend_name(d["backend"], at, BundleError)
        if d["precision"] not in PRECISIONS:
            raise BundleError(
                f"{at}: unknown precision {d['precision']!r}, expected one of {', '.join(PRECISIONS)}"
            )
        check_relpath(d["artifact"], f"{at}: artifact")
        return cls(
            profile=profile,
            backend=d["backend"],
            precision=d["precision"],
            artifact=d["artifact"],
            sha256=d["sha256"],
            options=dict(d.get("options") or {}),
            calibration=d.get("calibration"),
            measurements=d.get("measurements"),
            files=[dict(f) for f in d.get("files") or []],
        )


@dataclass
class Manifest:
    """The whole ``manifest.json``."""

    model: ModelInfo
    source: dict  # {"artifact": "model.onnx", "sha256": "..."}
    policy: str
    profiles: list[ProfileEntry]
    build: dict
    format_version: int = FORMAT_VERSION
    pad_mode: str = "zero"  # how padded inputs are filled: zero | reflect | edge (runtime/fitting.py)

    def entry(self, name: str) -> ProfileEntry:
        for e in self.profiles:
            if e.name == name:
                return e
        raise BundleError(
            f"bundle has no profile {name!r}; its profiles are {', '.join(e.name for e in self.profiles)}"
        )

    @property
    def profile_list(self) -> list[Profile]:
        return [e.profile for e in self.profiles]

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "model": self.model.to_dict(),
            "source": dict(self.source),
            "policy": self.policy,
            "pad_mode": self.pad_mode,
            "profiles": [e.to_dict() for e in self.profiles],
            "build": dict(self.build),
        }

    @classmethod
    def from_dict(cls, d: Mapping, where: str = MANIFEST_NAME) -> Manifest:
        """Validate and parse; every problem is a BundleError naming ``where`` (the manifest's path)."""
        if not isinstance(d, Mapping):
            raise BundleError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise BundleError(f"{where}: unknown format: expected {FORMAT!r}, got {str(d.get('format'))[:60]!r}")
        check_manifest(d, where, SUPPORTED_VERSIONS, POLICIES)  # every field's type, before parsing
        version = d["format_version"]
        try:
            model = ModelInfo.from_dict(d["model"])
        except (TypeError, ValueError, AttributeError, KeyError) as e:
            raise BundleError(f"{where}: model info does not parse: {e}") from None
        policy = d.get("policy") or default_policy(model.task, model.outputs)
        pad_mode = d.get("pad_mode", "zero")
        if pad_mode not in PAD_MODES:
            raise BundleError(f"{where}: unknown pad_mode {pad_mode!r}, expected one of {', '.join(PAD_MODES)}")
        source = d["source"]
        entries = [ProfileEntry.from_dict(p, where) for p in d["profiles"]]
        seen: set[str] = set()
        for e in entries:
            if e.name in seen:
                raise BundleError(f"{where}: profile name {e.name!r} appears twice")
            seen.add(e.name)
        input_names = {i.name for i in model.inputs}
        for e in entries:
            if input_names and set(e.profile.inputs) != input_names:
                raise BundleError(
                    f"{where}: profile {e.name!r} covers inputs {sorted(e.profile.inputs)}, "
                    f"expected the model's image inputs {sorted(input_names)}"
                )
        return cls(
            model=model,
            source=dict(source),
            policy=policy,
            profiles=entries,
            build=dict(d.get("build") or {}),
            format_version=version,
            pad_mode=pad_mode,
        )

    @classmethod
    def read(cls, bundle_dir: str | os.PathLike) -> Manifest:
        """Read ``bundle_dir/manifest.json`` (a path to manifest.json itself works too)."""
        path = manifest_path(bundle_dir)
        path = bundle_file(path.parent, MANIFEST_NAME, "manifest")  # a link out of the bundle is refused
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise BundleError(f"{path}: cannot read the manifest ({e.strerror})") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise BundleError(f"{path}: not valid JSON ({str(e)[:120]}); the file is corrupt or truncated") from None
        return cls.from_dict(data, where=str(path))

    def write(self, bundle_dir: str | os.PathLike) -> Path:
        """Write ``bundle_dir/manifest.json`` atomically; returns its path."""
        return write_text_atomic(Path(bundle_dir) / MANIFEST_NAME, json.dumps(self.to_dict(), indent=2) + "\n")


def manifest_path(bundle_dir: str | os.PathLike) -> Path:
    """The manifest of a bundle directory; a BundleError that says what the path is when it is not one."""
    p = Path(bundle_dir)
    if p.is_file() and p.name == MANIFEST_NAME:
        return p
    if p.is_file():
        hint = " (an ONNX model: build a bundle with `mrdeploy build-engine`)" if p.suffix == ".onnx" else ""
        raise BundleError(f"{p}: expected a bundle directory with {MANIFEST_NAME}, got a file{hint}")
    if not p.exists():
        raise BundleError(f"{p}: no such bundle directory")
    m = p / MANIFEST_NAME
    if not m.is_file():
        raise BundleError(f"{p}: not a bundle: expected {MANIFEST_NAME} in it, found none")
    return m


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_artifact(bundle_dir: str | os.PathLike, artifact: str, sha256: str, what: str) -> Path:
    """Check one artifact is a regular file inside the bundle (links resolved) with the recorded sha256;
    returns its resolved path. Nothing outside the bundle is opened."""
    path = bundle_file(bundle_dir, artifact, what)
    got = sha256_file(path)
    if got != sha256:
        raise BundleError(
            f"{what}: artifact {Path(bundle_dir) / artifact} has changed: expected sha256 {sha256}, got {got} "
            "(the file was modified or truncated after the build)"
        )
    return path


def verify_entry_files(bundle_dir: str | os.PathLike, entry: ProfileEntry, verify: bool = True) -> Path:
    """A profile's artifact and its further ``files`` (each inside the bundle and, with ``verify``, of the
    recorded sha256); returns the artifact's resolved path."""
    what = f"profile {entry.name!r}"
    check = verify_artifact if verify else (lambda b, rel, _sha, w: bundle_file(b, rel, w))
    paths = [check(bundle_dir, rel, sha, what) for rel, sha in entry_files(entry)]
    return paths[0]


def entry_files(entry: ProfileEntry) -> list[tuple[str, str]]:
    """(path, sha256) of every file a profile needs: its artifact first, then its further ``files``."""
    return [(entry.artifact, entry.sha256), *((f["path"], f["sha256"]) for f in entry.files)]


def verify_artifacts(
    bundle_dir: str | os.PathLike,
    manifest: Manifest,
    profiles: Iterable[str] | None = None,
    source: bool = True,
) -> None:
    """Check that every artifact (each profile's, its calibration cache, and the source model unless
    ``source=False``) exists and matches its sha256. ``profiles`` limits the check to those names."""
    wanted = None if profiles is None else set(profiles)
    checked: set[tuple[str, str]] = set()  # graphs may share a file (identical artifacts, shared weights)
    if source:
        verify_artifact(bundle_dir, manifest.source["artifact"], manifest.source["sha256"], "source model")
        for f in manifest.source.get("files", []):
            verify_artifact(bundle_dir, f["path"], f["sha256"], "source model")
            checked.add((f["path"], f["sha256"]))
    for e in manifest.profiles:
        if wanted is not None and e.name not in wanted:
            continue
        for rel, sha in entry_files(e):
            if (rel, sha) not in checked:
                verify_artifact(bundle_dir, rel, sha, f"profile {e.name!r}")
                checked.add((rel, sha))
        cal = e.calibration or {}
        if cal.get("cache") is not None:  # the validator made sure cache_sha256 is there
            verify_artifact(bundle_dir, cal["cache"], cal["cache_sha256"], f"profile {e.name!r} calibration cache")
    tc = manifest.build.get("timing_cache")
    if source and tc:
        verify_artifact(bundle_dir, tc["artifact"], tc["sha256"], "TensorRT timing cache")


# --- TensorRT plan compatibility -------------------------------------------------------------------


def tensorrt_requirements(entry: ProfileEntry, build: Mapping) -> dict:
    """What a tensorrt entry's plan needs: version, compute capability, GPU, compatibility flags."""
    o = entry.options
    return {
        "tensorrt_version": o.get("tensorrt_version") or build.get("tensorrt"),
        "compute_capability": o.get("compute_capability") or build.get("compute_capability"),
        "gpu": o.get("gpu") or build.get("gpu"),
        "hardware_compatibility": str(o.get("hardware_compatibility") or "none").lower(),
        "version_compatible": bool(o.get("version_compatible", False)),
    }


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in str(v).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = str(cc).partition(".")
    return int(major), int(minor or 0)


def check_tensorrt_compat(
    entry: ProfileEntry,
    build: Mapping,
    tensorrt_version: str,
    compute_capability: str,
    gpu: str | None = None,
) -> None:
    """Raise BundleError if ``entry``'s plan cannot be deserialized by this TensorRT on this GPU.

    Version: the same major.minor.patch, or (version_compatible) the same major and not older.
    GPU: the same compute capability; with hardware_compatibility "ampere_plus", any >= 8.0 runtime GPU.
    """
    req = tensorrt_requirements(entry, build)
    where = f"profile {entry.name!r} ({entry.artifact})"
    built_v = req["tensorrt_version"]
    if not built_v:
        raise BundleError(f"{where}: the manifest does not record the TensorRT version the plan was built with")
    bv, rv = _version_tuple(built_v), _version_tuple(tensorrt_version)
    if req["version_compatible"]:
        ok = bool(bv) and bool(rv) and rv[0] == bv[0] and rv[:3] >= bv[:3]
        expected = f"TensorRT {bv[0] if bv else '?'}.x >= {built_v} (built version-compatible)"
    else:
        ok = rv[:3] == bv[:3]
        expected = f"TensorRT {built_v}"
    if not ok:
        raise BundleError(
            f"{where}: plan built for {expected}, got TensorRT {tensorrt_version}; rebuild the bundle here "
            "with `mrdeploy build-engine --backend tensorrt`"
        )
    built_cc = req["compute_capability"]
    if not built_cc:
        raise BundleError(f"{where}: the manifest does not record the GPU compute capability the plan was built for")
    hw = req["hardware_compatibility"].replace("-", "_").replace("+", "_plus")
    gpu_note = f" ({req['gpu']})" if req["gpu"] else ""
    here = f"compute capability {compute_capability}" + (f" ({gpu})" if gpu else "")
    if hw in ("ampere_plus", "ampere_plus_plus"):
        if _cc_tuple(compute_capability) < (8, 0):
            raise BundleError(
                f"{where}: plan built hardware-compatible for Ampere or newer (compute capability >= 8.0), "
                f"got {here}"
            )
        return
    if _cc_tuple(compute_capability) != _cc_tuple(built_cc):
        raise BundleError(
            f"{where}: plan built for compute capability {built_cc}{gpu_note}, got {here}; rebuild on this "
            "GPU or build with hardware compatibility"
        )
