"""``build_engine``: an ONNX model and resolution profiles in, a bundle (one engine per profile) out.

The bundle is written inside ``atomic_dir(output)``: a failure at any profile (a bad profile, a
specialized model that does not match the source, a TensorRT parser error) leaves no bundle and leaves
an existing one untouched. Layout and manifest: docs/bundle.md (``mrdeploy.runtime.manifest``).

Per profile, small stages: specialize (:mod:`.specialize`) -> check the fp32 specialized model against
the source -> quantize (precision ``int8`` / ``auto``: :func:`_quantize_profile`, the calibration hook)
-> the backend's build stage (``Backend.build_profile``: cast / convert, check, write the artifact)
-> with ``--max-drop``, an fp16/bf16 engine scored on held-out data (:func:`_hold_to_budget`).
Backends come from the one registry (``mrdeploy.runtime.backends.registry``): ``onnxruntime``
(``profiles/<name>.onnx``), ``tensorrt`` (``profiles/<name>.plan`` + one timing cache), ``openvino``
(``profiles/<name>.xml`` + ``.bin``), or any backend registered by the user.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mrdeploy._atomic import atomic_dir, check_output
from mrdeploy._progress import Progress
from mrdeploy.errors import BudgetError, ExportError, MrdeployError, first_line
from mrdeploy.exporter import source_rule, weights
from mrdeploy.exporter.onnx_model import SourceModel, read_model
from mrdeploy.exporter.resolve import resolve_profiles
from mrdeploy.runtime.backends.registry import (
    BuiltProfile,
    ProfileBuild,
    backend_names,
    check_backend_name,
    get_backend,
)
from mrdeploy.runtime.dispatch import check_policy
from mrdeploy.runtime.manifest import PAD_MODES, default_policy  # one copy of each rule
from mrdeploy.runtime.manifest import PRECISIONS as ENGINE_PRECISIONS
from mrdeploy.runtime.profiles import Profile, ProfileSpec

PRECISIONS = (*ENGINE_PRECISIONS, "auto")
# the check of a specialized model against its source, per precision: (atol, rtol, min cosine)
# int8 profiles: the fp32 model they are quantized from is checked with the fp32 tolerances; the Q/DQ
# model itself against the source on held-out real data (the calibration's drop and --max-drop)
TOLERANCES = {"fp32": (1e-4, 1e-3, 0.9999), "fp16": (1e-2, 2e-2, 0.999)}
# float precisions that round activations: with --max-drop, held to it on held-out data (calibration/heldout.py)
LOWERED = ("fp16", "bf16")
TIME_SOURCE = True  # build_bundle's default for time_source (the test suite turns it off: see tests/conftest.py)


@dataclass
class ProfileReport:
    """One row of the build table."""

    name: str
    describe: str
    backend: str
    precision: str
    nodes_before: int
    nodes_after: int
    max_abs: float | None  # worst check error (None: not checked here, e.g. tensorrt without a GPU run)
    min_cosine: float | None
    seconds: float
    artifact: str
    shape_ops_left: int = 0


@dataclass
class BuildResult:
    path: Path
    policy: str = "pad"
    profiles: list[ProfileReport] = field(default_factory=list)
    check_rows: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # profile -> why its engine was refused (skip_refused)
    requested: list[str] = field(default_factory=list)  # every profile asked for, in order (refused or not)

    def table(self) -> str:
        head = (
            f"{'profile':<18} {'sizes (min-max@opt)':<34} {'backend':<11} {'prec':<5} {'nodes':>11} "
            f"{'check err':>10} {'cosine':>9} {'time':>7}"
        )
        lines = [head]
        for r in self.profiles:
            err = "-" if r.max_abs is None else f"{r.max_abs:.2e}"
            cos = "-" if r.min_cosine is None else f"{r.min_cosine:.6f}"
            lines.append(
                f"{r.name:<18} {r.describe:<34} {r.backend:<11} {r.precision:<5} "
                f"{r.nodes_before:>4} -> {r.nodes_after:<4} {err:>10} {cos:>9} {r.seconds:>6.1f}s"
            )
        return "\n".join(lines)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ExportError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")


def _shapes_text(profile: Profile) -> str:
    """The profile in ``--profile`` syntax, without its name (``32-96@64``, ``t:112-128@128,s:256``)."""
    return profile.describe().split("=", 1)[1]


def _quantize_profile(source: SourceModel, model, profile: Profile, *, precision: str, backend: str, options):
    """THE hook for precision ``int8`` / ``auto``: gets the fp32 model specialized to ``profile`` (already
    checked against the source) and the build's :class:`~mrdeploy.calibration.build_hook.CalibOptions`;
    returns ``(model, precision, calibration, measurements, cache_bytes)``: the model to save or build
    and the precision actually chosen (for ``int8`` the Q/DQ model; when ``auto`` keeps ``fp32`` the
    fp32 model), the manifest's ``calibration`` dict (``cache``/``cache_sha256`` are filled by the
    builder when ``cache_bytes`` is given: written as ``profiles/<name>.calib``) and ``measurements``."""
    from mrdeploy.calibration.build_hook import quantize_for_build

    return quantize_for_build(source.path, model, profile, precision=precision, backend=backend, options=options)


def _check(kind: str, ok_rows: list, profile: Profile, table: str, reference: str = "source ONNX") -> None:
    if not all(r.ok for r in ok_rows):
        raise ExportError(
            f"profile {profile.name!r}: the {kind} model does not match the {reference} model; no bundle written\n"
            + table
        )


def build_bundle(
    model_path: str | os.PathLike,
    output: str | os.PathLike,
    profiles: Sequence[str | ProfileSpec | Profile] = (),
    *,
    profiles_file: str | os.PathLike | None = None,
    batch: str | tuple[int, int, int] | None = None,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    policy: str | None = None,
    pad_mode: str = "zero",
    divisor: int | None = None,
    spatial_outputs: Sequence[str] | None = None,
    mean: Sequence[float] | str | None = None,
    std: Sequence[float] | str | None = None,
    min_size=None,
    max_size=None,
    threads: int | None = None,
    workspace: int | None = None,
    timing_cache: str | os.PathLike | None = None,
    hardware_compatible: bool = False,
    calib_data: str | os.PathLike | None = None,
    calib_method: str | None = None,
    calib_samples: int | None = None,
    max_drop: float | None = None,
    heldout_data: str | os.PathLike | None = None,
    bias_correction: bool = True,
    quiet: bool = False,
    force: bool = False,
    share_weights: bool = True,
    time_source: bool | None = None,
    skip_refused: bool = False,
) -> BuildResult:
    """Build the bundle and return it with the per-profile report (see :func:`build_engine`).
    ``share_weights=False`` leaves each graph with its own weights (``--backend auto``'s candidates: their
    files are picked from and shared once the bundle is assembled). ``time_source`` (default
    ``TIME_SOURCE``): time each profile that the source model could serve against it and keep the faster
    (:mod:`.source_rule`); ``False`` keeps every specialized file, so the artifacts do not depend on timing.
    ``skip_refused``: a profile whose engine is refused (it misses ``max_drop``, does not convert, or fails
    its check against the source) is left out and named in ``result.refused`` instead of failing the build
    (``--backend auto``'s candidates: another backend or precision serves that profile); the build fails
    only when every profile is refused."""
    if backend == "auto":  # every available backend and precision, the fastest kept per profile
        settings = {k: v for k, v in locals().items()
                    if k not in ("model_path", "output", "profiles", "backend", "skip_refused")}
        from mrdeploy.exporter.auto import build_auto

        return build_auto(model_path, output, profiles, **settings)
    check_backend_name(backend, "backend", ExportError)
    backend_cls = get_backend(backend)
    check_precision(precision)
    allowed = (*backend_cls.precisions, "auto") if backend_cls.qdq_activations else backend_cls.precisions
    if precision not in allowed:
        raise ExportError(f"precision: backend {backend!r} builds {', '.join(allowed)}, got {precision!r}")
    if policy is not None:
        check_policy(policy)
    check_output(output, "bundle", force)  # before any work: replace only what mrdeploy wrote
    calib_options = None
    if precision in ("int8", "auto"):
        from mrdeploy.calibration.build_hook import DEFAULT_SAMPLES, CalibOptions

        calib_options = CalibOptions(  # validates --max-drop before any work
            data=calib_data, heldout=heldout_data, method=calib_method or CalibOptions.method,
            samples=DEFAULT_SAMPLES if calib_samples is None else calib_samples, max_drop=max_drop, threads=threads,
            bias_correction=bias_correction,
        )
    if pad_mode not in PAD_MODES:
        raise ExportError(f"pad_mode: expected one of {', '.join(PAD_MODES)}, got {pad_mode!r}")
    builder = backend_cls.builder(  # BackendUnavailable here, before any work (no TensorRT/GPU, no OpenVINO)
        threads=threads, precision=precision, workspace=workspace, timing_cache=timing_cache,
        hardware_compatible=hardware_compatible,
    )
    source = read_model(
        model_path, divisor=divisor, spatial_outputs=spatial_outputs, mean=mean, std=std,
        min_size=min_size, max_size=max_size,
    )
    resolved = resolve_profiles(source, profiles, batch=batch, profiles_file=profiles_file)
    from mrdeploy.planning import file_policy

    policy = policy or file_policy(profiles_file) or default_policy(source.info.task, source.info.outputs)
    check_policy(policy)
    held_items = None
    if max_drop is not None and precision in LOWERED:  # loaded once, before any work
        from mrdeploy.calibration.api import check_max_drop
        from mrdeploy.calibration.build_hook import DEFAULT_SAMPLES
        from mrdeploy.calibration.heldout import heldout_items

        check_max_drop(max_drop)
        channels = source.info.inputs[0].channels if source.info.inputs else 3
        held_items = heldout_items(calib_data, heldout_data, DEFAULT_SAMPLES if calib_samples is None else calib_samples,
                                   0, channels)

    import onnx

    from mrdeploy.exporter.specialize import (
        check_specialized,
        cpu_session,
        format_check_table,
        specialize,
    )
    from mrdeploy.runtime.manifest import FORMAT_VERSION, Manifest, ProfileEntry, sha256_file

    output = Path(output)
    result = BuildResult(path=output, policy=policy, requested=[p.name for p in resolved])
    check_threads = threads or min(4, os.cpu_count() or 1)
    src_session = cpu_session(source.proto, check_threads)
    entries = []
    show = None if not quiet else False
    with atomic_dir(output, "bundle", force) as tmp:
        (tmp / "profiles").mkdir()
        if source.external_data:  # one self-contained file in the bundle (ONNX protobufs stop at 2 GB)
            try:
                onnx.save(source.proto, str(tmp / "model.onnx"))
            except ValueError as e:
                raise ExportError(f"{source.path}: models over 2 GB (external data) cannot be bundled yet: {e}") from None
        else:
            shutil.copyfile(source.path, tmp / "model.onnx")
        stored = {sha256_file(tmp / "model.onnx"): "model.onnx"}  # sha256 -> the bundle file that holds it
        with Progress(len(resolved), f"building {len(resolved)} profiles ({backend})", show=show) as bar:
            for profile in resolved:
                bar.update(0, note=profile.name)
                start = time.perf_counter()
                spec = specialize(source.proto, profile)
                result.notes.extend(f"{profile.name}: {n}" for n in spec.notes)
                model, prec, calibration, measurements, calib_cache = spec.model, precision, None, None, None
                fp32_rows = None
                if precision in ("int8", "auto") or builder.check_fp32_first:
                    # what gets quantized or built is the fp32 specialized model: it must match the source
                    fp32_rows = check_specialized(src_session, spec.model, profile, threads=check_threads)
                    result.check_rows.extend(fp32_rows)
                    _check("fp32 specialized", fp32_rows, profile, format_check_table(fp32_rows))
                if precision in ("int8", "auto"):
                    try:
                        model, prec, calibration, measurements, calib_cache = _quantize_profile(
                            source, spec.model, profile, precision=precision, backend=backend,
                            options=calib_options,
                        )
                    except BudgetError as e:
                        _refuse(e, profile, result, skip_refused, len(resolved))
                        bar.update(1, note=profile.name)
                        continue
                    if calibration:
                        result.notes.extend(f"{profile.name}: {n}" for n in calibration.get("notes", []))
                    if precision == "auto" and (measurements or {}).get("reason"):
                        result.notes.append(f"{profile.name}: precision auto chose {prec}: {measurements['reason']}")

                def check(candidate, atol, rtol, min_cosine, what=None, reference=None, _profile=profile, _prec=prec):
                    ref = src_session if reference is None else cpu_session(reference, check_threads)
                    rows = check_specialized(ref, candidate, _profile, atol=atol, rtol=rtol,
                                             min_cosine=min_cosine, threads=check_threads)
                    result.check_rows.extend(rows)
                    kind = "source ONNX" if reference is None else "ONNX"
                    _check(what or f"{_prec} specialized", rows, _profile, format_check_table(rows), kind)
                    return rows

                try:
                    built: BuiltProfile = builder.build_profile(ProfileBuild(
                        model=model, profile=profile, precision=prec, directory=tmp, threads=threads,
                        fp32_rows=fp32_rows, check=check, source_session=src_session,
                        held_to_budget=held_items is not None,
                    ))
                except ExportError as e:  # the engine does not convert, or fails its check against the source
                    _refuse(e, profile, result, skip_refused, len(resolved))
                    bar.update(1, note=profile.name)
                    continue
                artifact, options, max_abs, min_cos = built.artifact, dict(built.options), built.max_abs, built.min_cosine
                result.notes.extend(f"{profile.name}: {n}" for n in built.notes)
                artifact = _store_once(tmp, artifact, stored, alone=not built.files, notes=result.notes, name=profile.name)
                options.update(
                    optimizer=spec.optimizer,
                    nodes={"source": spec.nodes_before, "specialized": spec.nodes_after},
                )
                if calibration is not None and calib_cache is not None:
                    cache_name = f"profiles/{profile.name}.calib"
                    (tmp / cache_name).write_bytes(calib_cache)
                    calibration = {**calibration, "cache": cache_name, "cache_sha256": sha256_file(tmp / cache_name)}
                entries.append(
                    ProfileEntry(
                        profile=profile, backend=backend, precision=prec, artifact=artifact,
                        sha256=sha256_file(tmp / artifact), options=options,
                        calibration=calibration, measurements=measurements,
                        files=[{"path": f, "sha256": sha256_file(tmp / f)} for f in built.files],
                    )
                )
                if held_items is not None:
                    try:
                        entries[-1] = _hold_to_budget(entries[-1], tmp, _build_info(builder), source, held_items,
                                                      max_drop, threads)
                    except BudgetError as e:
                        entries.pop()
                        _refuse(e, profile, result, skip_refused, len(resolved))
                        bar.update(1, note=profile.name)
                        continue
                result.profiles.append(
                    ProfileReport(
                        profile.name, _shapes_text(profile), backend, prec, spec.nodes_before, spec.nodes_after,
                        max_abs, min_cos, time.perf_counter() - start, artifact, spec.shape_ops_left,
                    )
                )
                bar.update(1, note=profile.name)
        build = _build_info(builder)
        builder.finish(tmp, build)  # shared files, e.g. TensorRT's timing cache
        source_ref = {"artifact": "model.onnx", "sha256": sha256_file(tmp / "model.onnx")}
        if TIME_SOURCE if time_source is None else time_source:  # never slower than the source model
            entries = source_rule.keep_faster(tmp, source_ref, entries, build, threads, result.notes, show)
            served = {e.name: e.artifact for e in entries}
            for row in result.profiles:
                row.artifact = served[row.name]
        if share_weights:
            source_ref, entries = weights.share_weights(tmp, source_ref, entries, result.notes)
        manifest = Manifest(
            model=source.info,
            source=source_ref,
            policy=policy,
            profiles=entries,
            build=build,
            format_version=FORMAT_VERSION,
            pad_mode=pad_mode,
        )
        manifest.write(tmp)
    return result


def _refuse(e: MrdeployError, profile: Profile, result: BuildResult, skip: bool, profiles: int) -> None:
    """Re-raise ``e`` unless ``skip`` and some profile of the build may still be served."""
    if not skip:
        raise e
    result.refused[profile.name] = first_line(e)
    if len(result.refused) == profiles:
        kind = BudgetError if isinstance(e, BudgetError) else ExportError
        every = kind("every profile was refused: " + "; ".join(result.refused.values()))
        every.refused = dict(result.refused)  # per profile, for --backend auto's records (exporter/auto.py)
        raise every from e


def _hold_to_budget(entry, bundle: Path, build: dict, source: SourceModel, items, max_drop: float, threads):
    """``entry`` with its held-out score against the source in ``measurements["heldout"]``; BudgetError
    when its drop exceeds ``max_drop`` (calibration/heldout.py)."""
    from dataclasses import replace

    from mrdeploy.calibration.heldout import check_engine

    backend = get_backend(entry.backend)
    engine = backend.engine_class()(bundle / entry.artifact, entry, build=build,
                                    **backend.engine_options({"threads": threads}))
    try:
        record = check_engine(engine, source.path, source.info, entry.profile, items, max_drop, threads)
    finally:
        engine.close()
    return replace(entry, measurements={**(entry.measurements or {}), "heldout": record})


def _store_once(tmp: Path, artifact: str, stored: dict[str, str], *, alone: bool, notes: list[str], name: str) -> str:
    """Identical artifacts are stored once: when ``artifact`` has the bytes of a file already in the bundle
    (the source model, or another profile's artifact: ranged fp32 profiles often specialize to the same
    graph), it is removed and the earlier file serves both profiles. ``alone``: the artifact names no
    other file (an OpenVINO .xml finds its .bin by name, so it is kept as written)."""
    from mrdeploy.runtime.manifest import sha256_file

    digest = sha256_file(tmp / artifact)
    earlier = stored.get(digest)
    if earlier is None or earlier == artifact or not alone:
        stored.setdefault(digest, artifact)
        return artifact
    (tmp / artifact).unlink()
    notes.append(f"{name}: its artifact is identical to {earlier}: stored once")
    return earlier


def _build_info(builder) -> dict:
    """The manifest's build block: versions, then every registered backend's keys (None unless this build's
    backend fills them: the TensorRT version and GPU, the OpenVINO version, ...)."""
    import onnx
    import onnxruntime

    from mrdeploy import __version__

    info = {"mrdeploy": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    for name in backend_names():
        try:
            info.update(dict.fromkeys(get_backend(name).build_keys))
        except MrdeployError:  # a registered backend whose module does not import here
            continue
    info.update(builder.build_info())
    info["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return info


def merge_build_info(blocks: Sequence[dict]) -> dict:
    """One build block for a bundle whose profiles come from several builds (``--backend auto``): each
    key's first value that is not None, so every backend's versions are there; ``created`` is now."""
    info: dict = {}
    for block in blocks:
        for k, v in block.items():
            if info.get(k) is None:
                info[k] = v
    info["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return info


def build_engine(
    model_path: str | os.PathLike,
    output: str | os.PathLike,
    profiles: Sequence[str | ProfileSpec | Profile] = (),
    **options,
) -> Path:
    """Build a bundle from ``model_path`` with one engine per profile; returns the bundle's path.

    ``profiles``: ``--profile`` strings (``224``, ``256x192``, ``96-160@128``, ``192x256-384x512@288x384``,
    ``name=...``, ``input:spec,input:spec``), ProfileSpecs or Profiles. Keywords: ``profiles_file``,
    ``batch`` ("1-8@1"), ``backend`` (a registered backend: "onnxruntime" | "tensorrt" | "openvino" | ...),
    ``precision`` ("fp32" | "fp16" | "bf16" | "int8" | "auto", as the backend builds them), ``policy`` ("pad" | "resize" | "letterbox" | "error"; default: :func:`default_policy`),
    ``pad_mode`` ("zero" | "reflect" | "edge", recorded in the manifest), model
    facts for models without mrdeploy metadata (``divisor``, ``spatial_outputs``, ``mean``, ``std``, ``min_size``, ``max_size``),
    ``threads`` (ONNX Runtime intra-op threads recorded in the bundle), tensorrt's ``workspace`` (MiB),
    ``timing_cache`` (file read before and updated after the build) and ``hardware_compatible``, and the
    calibration options (``calib_data``, ``calib_method``, ``calib_samples``, ``max_drop``, ``heldout_data``:
    separate held-out data for the budget, ``bias_correction``), ``quiet``,
    ``force`` (replace an existing mrdeploy output of another kind at ``output``; never anything else):
    the keywords of :func:`build_bundle`, which also returns the per-profile report.
    """
    return build_bundle(model_path, output, profiles, **options).path
