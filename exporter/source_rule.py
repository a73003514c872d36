"""A profile is never slower than the source model it was specialized from.

Specializing a profile folds the shape arithmetic and fixes the sizes, which usually pays; not always (on
ONNX Runtime's CPU provider the dynamic graph sometimes runs as fast). Where the source model can stand in
for a profile's artifact (:func:`stands_in`: an fp32 ONNX file without side files, served by the same
backend with the same session options), the build times both side by side (:mod:`.timing`) and keeps
the source when it is faster by ``MIN_GAIN``: the profile then serves ``model.onnx`` and its specialized
file is not written. Within ``MIN_GAIN`` the two are equal in the timing's noise and the specialized file
is kept. Every timed profile records both in ``measurements["source_rule"]``; ``mrdeploy inspect`` shows
them. ``--backend auto`` applies the same rule by timing the source as one more candidate.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mrdeploy._progress import Progress
from mrdeploy.exporter.timing import score, time_engines
from mrdeploy.runtime.backends.registry import get_backend
from mrdeploy.runtime.manifest import ProfileEntry

MIN_GAIN = 1.03  # the source must be this much faster to replace a profile's specialized file


def stands_in(entry: ProfileEntry, source: dict) -> bool:
    """Whether the source model could serve ``entry`` as it is: an fp32 ONNX artifact of its own."""
    return (entry.precision == "fp32" and entry.artifact.endswith(".onnx") and not entry.files
            and entry.artifact != source["artifact"])


def as_source(entry: ProfileEntry, source: dict) -> ProfileEntry:
    """``entry`` served by the source model, with the profile's own options (shapes, session settings)."""
    return replace(entry, artifact=source["artifact"], sha256=source["sha256"], files=list(source.get("files", [])),
                   options={**entry.options, "source_model": True})


def keep_faster(bundle: Path, source: dict, entries: list[ProfileEntry], build: dict, threads: int | None,
                notes: list[str], show: bool | None = None) -> list[ProfileEntry]:
    """Time every profile of the bundle directory ``bundle`` that the source stands in for against the
    source; returns the entries, those where the source won pointing at it (their files removed when no
    other profile reads them)."""
    timed = [e for e in entries if stands_in(e, source)]
    if not timed:
        return entries
    out = {}
    with Progress(len(timed), "timing profiles against the source model", show=show) as bar:
        for e in timed:
            bar.update(0, note=e.name)
            out[e.name] = _decide(bundle, source, e, build, threads, notes)
            bar.update(1, note=e.name)
    entries = [out.get(e.name, e) for e in entries]
    kept = {e.artifact for e in entries}
    for e in timed:
        if e.artifact not in kept and (bundle / e.artifact).exists():
            (bundle / e.artifact).unlink()
    return entries


def _decide(bundle: Path, source: dict, entry: ProfileEntry, build: dict, threads: int | None,
            notes: list[str]) -> ProfileEntry:
    backend = get_backend(entry.backend)
    options = backend.engine_options({"threads": threads})
    candidates = {"specialized": entry, "source": as_source(entry, source)}
    engines = {}
    try:
        for key, e in candidates.items():
            engines[key] = backend.engine_class()(bundle / e.artifact, e, build=build, **options)
        ms = time_engines(engines, entry.profile)
    finally:
        for eng in engines.values():
            eng.close()
    gain = score(ms["specialized"]) / score(ms["source"])
    winner = "source" if gain >= MIN_GAIN else "specialized"
    record = {"specialized_ms": _rounded(ms["specialized"]), "source_ms": _rounded(ms["source"]),
              "source_gain": round(gain, 4), "min_gain": MIN_GAIN, "kept": winner, "threads": threads}
    if winner == "source":
        notes.append(f"{entry.name}: the source model is {gain:.2f}x faster than the specialized graph "
                     f"(>= {MIN_GAIN}x): the profile serves {source['artifact']}")
    chosen = candidates[winner]
    return replace(chosen, measurements={**(chosen.measurements or {}), "source_rule": record})


def _rounded(ms: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in ms.items()}
