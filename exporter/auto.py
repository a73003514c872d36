"""``build-engine --backend auto``: per profile, the fastest engine this machine can run within the budget.

1. Candidates: every registered backend that is available here, at each precision it offers on this
   machine (``Backend.auto_precisions``: fp32 and int8 on CPUs, bf16 where OpenVINO's CPU has it, fp16
   on a TensorRT GPU), or only at ``--precision`` when it is not ``auto``. Each candidate is a whole
   bundle built by :func:`~mrdeploy.exporter.build.build_bundle` (so every check of that path applies:
   fp32 against the source with allclose, int8 calibrated per profile and held to ``--max-drop`` on
   held-out data); where the builder refuses a candidate's engine for one profile (over the budget, not
   converted, failing its check), that candidate is refused at that profile only, with its message, and
   still competes at the others.
   An fp32 profile whose artifact is an ONNX file also competes with the source ONNX model itself (the
   dynamic file it was specialized from), so a specialization that does not pay is not kept.
2. Timing: per profile, every candidate's engine loaded in this process and called in turn (order
   rotated each round) at the profile's opt shape, and at its min and max too for ranged profiles; the
   score is the geometric mean over those shapes of the median milliseconds.
3. Choice: the lowest score; a lower precision than fp32 must beat the fastest fp32 candidate by
   ``AUTO_MIN_SPEEDUP`` (as ``--precision auto`` does): its accuracy cost needs a gain above the timing's
   noise. The manifest records, per profile, every candidate (latency per shape, score, drop on
   held-out data, or why it was refused) and the reason of the choice; ``mrdeploy inspect`` shows them.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from mrdeploy._atomic import atomic_dir, check_output, run_tempdir
from mrdeploy._progress import Progress
from mrdeploy.errors import ExportError, MrdeployError
from mrdeploy.errors import first_line as _first_line
from mrdeploy.exporter.source_rule import as_source, stands_in
from mrdeploy.exporter.timing import CALLS, ROUNDS, score, time_engines
from mrdeploy.exporter.weights import share_weights
from mrdeploy.runtime.backends.registry import backend_names, get_backend
from mrdeploy.runtime.manifest import Manifest, ProfileEntry, sha256_file

AUTO = "auto"


@dataclass
class Candidate:
    backend: str
    precision: str
    source: bool = False  # the source ONNX model served as is (fp32)
    manifest: Manifest | None = None
    bundle: Path | None = None
    error: str | None = None  # why the builder refused it
    refused: dict[str, str] = field(default_factory=dict)  # profile -> why the builder refused its engine
    ms: dict[str, float] = field(default_factory=dict)  # shape kind -> median ms

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}" + (" (source model)" if self.source else "")

    @property
    def score(self) -> float:
        return score(self.ms)


def candidate_kinds(precision: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(backend, precision) pairs to build here, and notes on the backends left out."""
    kinds, notes = [], []
    for name in backend_names():
        cls = get_backend(name)
        if not cls.is_available():
            notes.append(f"backend {name} is not available here ({cls.install_hint or 'not installed'})")
            continue
        offered = cls.auto_precisions()
        if precision == AUTO:
            kinds.extend((name, p) for p in offered)
        elif precision in offered:
            kinds.append((name, precision))
        else:
            notes.append(f"backend {name} does not build {precision} on this machine")
    if not kinds:
        raise ExportError(f"--backend auto: no backend available here builds precision {precision!r}; "
                          + "; ".join(notes))
    return kinds, notes


def _engine(c: Candidate, entry: ProfileEntry, threads: int | None):
    backend = get_backend(entry.backend)
    options = backend.engine_options({"threads": threads})
    return backend.engine_class()(c.bundle / entry.artifact, entry, build=c.manifest.build, **options)


def time_candidates(name: str, cands: list[Candidate], threads: int | None) -> None:
    """Fill each candidate's ``ms`` for profile ``name``: engines loaded together, called in turn."""
    entries = {id(c): _entry(c, name) for c in cands}
    engines = {}
    try:
        for c in cands:  # an engine this machine cannot load is a refused candidate, not a failed build
            try:
                engines[id(c)] = _engine(c, entries[id(c)], threads)
            except MrdeployError as e:
                c.error = f"profile {name!r}: the engine does not load: {_first_line(e)}"
        loaded = [c for c in cands if id(c) in engines]
        if not loaded:
            raise ExportError(f"--backend auto: profile {name!r}: no candidate's engine loads: "
                              + "; ".join(f"{c.label}: {c.error}" for c in cands))
        ms = time_engines(engines, entries[id(loaded[0])].profile)
        for c in loaded:
            c.ms = ms[id(c)]
    finally:
        for eng in engines.values():
            eng.close()


def _entry(c: Candidate, name: str) -> ProfileEntry:
    entry = c.manifest.entry(name)
    return as_source(entry, c.manifest.source) if c.source else entry  # served by the same backend


def choose(cands: list[Candidate], min_speedup: float) -> tuple[Candidate, str]:
    """The fastest candidate; a non-fp32 one only when it beats the fastest fp32 one by ``min_speedup``."""
    timed = sorted((c for c in cands if c.ms), key=lambda c: c.score)
    best = timed[0]
    fp32 = [c for c in timed if c.precision == "fp32"]
    if best.precision != "fp32" and fp32:
        gain = fp32[0].score / best.score
        if gain < min_speedup:
            return fp32[0], (f"{best.label} is only {gain:.2f}x {fp32[0].label} (< {min_speedup:.2f}x needed "
                             f"for a lower precision): fastest fp32 kept")
        return best, f"fastest: {best.score:.3f} ms, {gain:.2f}x the fastest fp32 ({fp32[0].label})"
    runner_up = f", {timed[1].score / best.score:.2f}x faster than {timed[1].label}" if len(timed) > 1 else ""
    return best, f"fastest: {best.score:.3f} ms{runner_up}"


def _record(c: Candidate, name: str) -> dict:
    row = {"backend": c.backend, "precision": c.precision, "source_model": c.source}
    if c.error is not None:  # a candidate refused at every profile: each profile's row names its own reason
        return {**row, "refused": c.refused.get(name, c.error)}
    e = c.manifest.entry(name)
    row.update(ms={k: round(v, 4) for k, v in c.ms.items()}, score_ms=round(c.score, 4))
    if e.calibration:
        row["drop"] = e.calibration.get("drop")
    elif (e.measurements or {}).get("heldout"):  # bf16/fp16 held to --max-drop (calibration/heldout.py)
        row["drop"] = e.measurements["heldout"]["drop"]
    return row


def _copy(src_bundle: Path, rel: str, out: Path, taken: dict[str, str], alt: str) -> str:
    """Copy ``rel`` into ``out`` under the same name, or ``alt`` when another candidate's different file
    holds that name already; returns the name used."""
    digest = sha256_file(src_bundle / rel)
    for name in (rel, alt):
        if taken.get(name) in (None, digest):
            if name not in taken:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src_bundle / rel, out / name)
                taken[name] = digest
            return name
    raise ExportError(f"--backend auto: cannot place {rel} of {src_bundle.name} in the bundle")


def build_auto(model_path, output, profiles=(), *, precision: str = "auto", quiet: bool = False,
               force: bool = False, threads: int | None = None, share_weights: bool = True,
               time_source: bool | None = None, **options):
    """Build every candidate, time them per profile, and write one bundle of the chosen engines.
    ``time_source``: unused, the source model is one of the candidates wherever it stands in."""
    from mrdeploy.calibration.api import AUTO_MIN_SPEEDUP
    from mrdeploy.exporter.build import BuildResult, build_bundle, check_precision

    check_precision(precision)
    check_output(output, "bundle", force)
    kinds, notes = candidate_kinds(precision)
    output = Path(output)
    show = None if not quiet else False
    with tempfile.TemporaryDirectory(prefix="mrdeploy-auto-", dir=run_tempdir()) as work:
        cands: list[Candidate] = []
        names: list[str] = []  # every profile, in order: a candidate's bundle lacks those it refused
        with Progress(len(kinds), f"--backend auto: building {len(kinds)} candidates", show=show) as bar:
            for backend, prec in kinds:
                bar.update(0, note=f"{backend} {prec}")
                c = Candidate(backend, prec)
                try:
                    built_c = build_bundle(model_path, Path(work) / f"{backend}-{prec}", profiles, backend=backend,
                                           precision=prec, threads=threads, quiet=True, share_weights=False,
                                           time_source=False, skip_refused=True, **options)
                    c.bundle, c.refused, names = built_c.path, built_c.refused, built_c.requested
                    c.manifest = Manifest.read(c.bundle)
                except MrdeployError as e:
                    c.error, c.refused = _first_line(e), dict(getattr(e, "refused", {}))
                cands.append(c)
                if c.manifest is not None:
                    if any(stands_in(e, c.manifest.source) for e in c.manifest.profiles):
                        cands.append(Candidate(backend, prec, source=True, manifest=c.manifest, bundle=c.bundle,
                                               refused=c.refused))
                bar.update(1, note=f"{backend} {prec}")
        built = [c for c in cands if c.manifest is not None]
        if not built:
            raise ExportError("--backend auto: every candidate was refused: "
                              + "; ".join(f"{c.label}: {c.error}" for c in cands))
        first = built[0].manifest
        result = BuildResult(path=output, policy=first.policy, notes=list(notes))
        result.notes.extend(f"candidate {c.label} refused: {c.error}" for c in cands if c.error)
        chosen: dict[str, tuple[Candidate, str, list[dict]]] = {}
        with Progress(len(names), "--backend auto: timing candidates", show=show) as bar:
            for name in names:
                bar.update(0, note=name)
                here = [replace(c, ms={}) for c in built if name not in c.refused]  # this profile's timings only
                if any(c.source for c in here):  # the source only where its fp32 profile is an ONNX file
                    here = [c for c in here if not c.source or _source_competes(c, name)]
                if not here:  # e.g. --precision int8 --max-drop: no backend's INT8 engine met the budget
                    raise ExportError(f"--backend auto: profile {name!r}: every candidate was refused: "
                                      + "; ".join(f"{c.label}: {c.refused[name]}" for c in built if not c.source))
                time_candidates(name, here, threads)
                result.notes.extend(f"candidate {c.label} refused: {c.error}" for c in here if c.error)
                best, reason = choose(here, AUTO_MIN_SPEEDUP)
                missed = [replace(c, error=c.refused[name]) for c in built if name in c.refused and not c.source]
                result.notes.extend(f"{name}: candidate {c.label} refused: {c.error}" for c in missed)
                rows = [_record(c, name) for c in here] + [_record(c, name) for c in cands + missed if c.error]
                chosen[name] = (best, reason, rows)
                result.notes.append(f"{name}: {best.label}: {reason}")
                bar.update(1, note=name)
        _write(output, force, first, chosen, built, threads, result, share_weights)
    return result


def _source_competes(c: Candidate, name: str) -> bool:
    return stands_in(c.manifest.entry(name), c.manifest.source)


def _write(output: Path, force: bool, first: Manifest, chosen: dict, built: list[Candidate], threads,
           result, share: bool) -> None:
    """One bundle of the chosen engines: their files copied from the candidate bundles, the manifest's
    build block the union of the candidates' (every backend's versions), the choice recorded."""
    from mrdeploy.exporter.build import ProfileReport, merge_build_info

    entries = []
    with atomic_dir(output, "bundle", force) as tmp:
        src = built[0]
        shutil.copyfile(src.bundle / first.source["artifact"], tmp / "model.onnx")
        taken = {"model.onnx": first.source["sha256"]}
        for name, (c, reason, rows) in chosen.items():
            entry = _entry(c, name)
            tag = f"{c.backend}-{c.precision}"
            artifact = _copy(c.bundle, entry.artifact, tmp, taken, f"profiles/{name}.{tag}{Path(entry.artifact).suffix}")
            files = []
            for f in entry.files:  # an OpenVINO .bin: found by the .xml's name, so kept beside it
                rel = _copy(c.bundle, f["path"], tmp, taken, str(Path(artifact).with_suffix(Path(f["path"]).suffix)))
                files.append({"path": rel, "sha256": f["sha256"]})
            calibration = entry.calibration
            if calibration and calibration.get("cache"):
                cache = _copy(c.bundle, calibration["cache"], tmp, taken, f"profiles/{name}.{tag}.calib")
                calibration = {**calibration, "cache": cache}
            measurements = {"auto": {"choice": c.label, "reason": reason, "threads": threads,
                                     "rounds": ROUNDS, "calls": CALLS, "candidates": rows}}
            if entry.measurements:
                measurements["build"] = entry.measurements
            entries.append(replace(entry, artifact=artifact, files=files, calibration=calibration,
                                   measurements=measurements))
            nodes = entry.options.get("nodes") or {}
            result.profiles.append(ProfileReport(
                name, entry.profile.describe().split("=", 1)[1], c.backend, c.precision, nodes.get("source", 0),
                nodes.get("specialized", 0), None, None, 0.0, artifact,
            ))
        source = {"artifact": "model.onnx", "sha256": first.source["sha256"]}
        if share:
            source, entries = share_weights(tmp, source, entries, result.notes)
        manifest = replace(first, profiles=entries, build=merge_build_info([c.manifest.build for c in built]),
                           source=source)
        manifest.write(tmp)
