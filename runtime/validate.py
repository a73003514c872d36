"""The manifest's field types and the one path rule, checked before anything of a bundle is used.

:func:`check_manifest` looks at the raw JSON (types, ranges, shapes, hashes) so the parsers after it
never see a value of the wrong type; every problem is a BundleError naming the field and what came.
:func:`bundle_file` is the only way a path the manifest names becomes a file to open: relative, inside
the bundle once every symbolic link is resolved, and a regular file. Pure Python.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from mrdeploy.errors import BundleError, PolicyError
from mrdeploy.runtime.modelinfo import TASKS

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def check_int(v, what: str, lo: int | None = None) -> int:
    if not _is_int(v) or (lo is not None and v < lo):
        bound = f" >= {lo}" if lo is not None else ""
        raise BundleError(f"{what}: expected an integer{bound}, got {v!r}")
    return v


def check_str(v, what: str) -> str:
    if not isinstance(v, str) or not v:
        raise BundleError(f"{what}: expected a non-empty string, got {v!r}")
    return v


def check_mapping(v, what: str, optional: bool = False) -> Mapping | None:
    if v is None and optional:
        return None
    if not isinstance(v, Mapping):
        raise BundleError(f"{what}: expected an object, got {type(v).__name__} {_short(v)}")
    return v


def check_sha256(v, what: str) -> str:
    if not isinstance(v, str) or not _SHA256.fullmatch(v):
        raise BundleError(f"{what}: expected a sha256 (64 lowercase hex digits), got {_short(v)}")
    return v


def check_relpath(v, what: str) -> str:
    """A path as the manifest may write it: relative, posix separators, no ``..``, no NUL."""
    if not isinstance(v, str) or not v:
        raise BundleError(f"{what}: expected a relative path inside the bundle, got {_short(v)}")
    pp = PurePosixPath(v)
    if pp.is_absolute() or ".." in pp.parts or "\\" in v or "\x00" in v or re.match(r"^[A-Za-z]:", v):
        raise BundleError(f"{what}: expected a path inside the bundle, got {v!r}")
    return v


def bundle_file(bundle_dir: str | os.PathLike, rel, what: str) -> Path:
    """The file ``rel`` names in the bundle, after resolving every link: inside the bundle and a regular
    file, or a BundleError (nothing outside the bundle is opened, stat-ed beyond the link, or hashed)."""
    check_relpath(rel, what)
    root = Path(bundle_dir).resolve()
    path = Path(os.path.realpath(root / rel))
    if path != root and root not in path.parents:
        raise BundleError(f"{what}: {rel!r} leads outside the bundle (a symbolic link to another place); "
                          "every file a bundle names must be inside it")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BundleError(f"{what}: artifact {root / rel} is missing") from None
    except OSError as e:
        raise BundleError(f"{what}: artifact {root / rel} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise BundleError(f"{what}: artifact {root / rel} is not a regular file")
    return path


def _short(v, n: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def _shape(v, what: str) -> tuple[int, ...]:
    if not isinstance(v, list) or len(v) != 4 or not all(_is_int(d) and d >= 1 for d in v):
        raise BundleError(f"{what}: expected 4 positive integers (N, C, H, W), got {_short(v)}")
    return tuple(v)


def check_profile(d, where: str) -> None:
    """One entry of ``profiles``: name, inputs (min <= opt <= max shapes), backend fields, hashes."""
    check_mapping(d, f"{where}: a profile")
    name = d.get("name")
    at = f"{where}: profile {name!r}" if isinstance(name, str) and name else f"{where}: a profile"
    missing = [k for k in ("name", "inputs", "backend", "precision", "artifact", "sha256") if k not in d]
    if missing:
        raise BundleError(f"{at} is missing {', '.join(missing)}")
    check_str(name, f"{where}: a profile's name")
    inputs = check_mapping(d.get("inputs"), f"{at}: inputs")
    if not inputs:
        raise BundleError(f"{at}: inputs: expected at least one input, got none")
    for iname, r in inputs.items():
        check_mapping(r, f"{at}: input {iname!r}")
        lo, opt, hi = (_shape(r.get(k), f"{at}: input {iname!r} {k}") for k in ("min", "opt", "max"))
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise BundleError(f"{at}: input {iname!r}: expected min <= opt <= max on every axis, got min "
                              f"{lo}, opt {opt}, max {hi}")
        if not lo[1] == opt[1] == hi[1]:
            raise BundleError(f"{at}: input {iname!r}: the channel count differs between min, opt and max")
    for key in ("backend", "precision"):
        check_str(d.get(key), f"{at}: {key}")
    check_relpath(d.get("artifact"), f"{at}: artifact")
    check_sha256(d.get("sha256"), f"{at}: sha256")
    check_mapping(d.get("options"), f"{at}: options", optional=True)
    check_mapping(d.get("measurements"), f"{at}: measurements", optional=True)
    check_files(d.get("files", []), at)
    cal = check_mapping(d.get("calibration"), f"{at}: calibration", optional=True)
    if cal and cal.get("cache") is not None:
        check_relpath(cal["cache"], f"{at}: calibration cache")
        check_sha256(cal.get("cache_sha256"), f"{at}: calibration cache_sha256")


def check_model(d, where: str) -> None:
    """The ``model`` block: name, task, inputs (at least one), outputs, labels."""
    m = check_mapping(d, f"{where}: model")
    if "name" in m:
        check_str(m["name"], f"{where}: model name")
    if m.get("task", "classification") not in TASKS:
        raise BundleError(f"{where}: model task: expected one of {', '.join(TASKS)}, got {_short(m.get('task'))}")
    inputs = m.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BundleError(f"{where}: model inputs: expected a non-empty list of inputs, got {_short(inputs)}")
    for k, i in enumerate(inputs):
        at = f"{where}: model input {k}"
        check_mapping(i, at)
        check_str(i.get("name"), f"{at} name")
        channels = check_int(i.get("channels", 3), f"{at} channels", 1)
        check_int(i.get("divisor", 1), f"{at} divisor", 1)
        for key in ("layout", "dtype"):
            if key in i:
                check_str(i[key], f"{at} {key}")
        for key in ("min_size", "max_size"):
            v = i.get(key)
            if v is not None and not (isinstance(v, list) and len(v) == 2 and all(_is_int(s) and s >= 1 for s in v)):
                raise BundleError(f"{at} {key}: expected [H, W] positive integers or null, got {_short(v)}")
        for key in ("mean", "std"):
            v = i.get(key)
            if v is not None and not (isinstance(v, list) and len(v) == channels and all(map(_is_number, v))):
                raise BundleError(f"{at} {key}: expected {channels} numbers or null, got {_short(v)}")
            if key == "std" and v is not None and any(s == 0 for s in v):
                raise BundleError(f"{at} std: expected non-zero values, got {v}")
        lo, hi = i.get("min_size"), i.get("max_size")
        if lo and hi and (lo[0] > hi[0] or lo[1] > hi[1]):
            raise BundleError(f"{at}: min_size {lo} is larger than max_size {hi}")
    names = [i["name"] for i in inputs]
    if len(set(names)) != len(names):
        raise BundleError(f"{where}: model inputs: names must be unique, got {names}")
    outputs = m.get("outputs", [])
    if not isinstance(outputs, list):
        raise BundleError(f"{where}: model outputs: expected a list, got {_short(outputs)}")
    for k, o in enumerate(outputs):
        check_mapping(o, f"{where}: model output {k}")
        check_str(o.get("name"), f"{where}: model output {k} name")
        if not isinstance(o.get("spatial", False), bool):
            raise BundleError(f"{where}: model output {k} spatial: expected true or false, got {_short(o.get('spatial'))}")
        check_int(o.get("stride", 1), f"{where}: model output {k} stride", 1)
    labels = m.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise BundleError(f"{where}: model labels: expected a list of strings or null, got {_short(labels)}")


def check_files(files, at: str) -> None:
    """A ``files`` list (further files a graph needs: an IR's .bin, shared weights): [{path, sha256}]."""
    if not isinstance(files, list):
        raise BundleError(f"{at}: files: expected a list of {{path, sha256}}, got {_short(files)}")
    for f in files:
        check_mapping(f, f"{at}: files entry")
        check_relpath(f.get("path"), f"{at}: file")
        check_sha256(f.get("sha256"), f"{at}: file {f.get('path')!r} sha256")


def check_manifest(d, where: str, supported_versions: tuple[int, ...], policies: tuple[str, ...]) -> None:
    """Every field's type and range, before the manifest is parsed."""
    check_mapping(d, where)
    version = d.get("format_version")
    if not _is_int(version) or version not in supported_versions:
        raise BundleError(
            f"{where}: unknown format_version: expected {' or '.join(map(str, supported_versions))}, got {_short(version)}"
            + (f" (a {type(version).__name__}, not an integer)" if not _is_int(version) else
               " (written by another mrdeploy version; rebuild the bundle with this one)")
        )
    missing = [k for k in ("model", "source", "profiles") if k not in d]
    if missing:
        raise BundleError(f"{where}: missing {', '.join(missing)}")
    check_model(d["model"], where)
    if "policy" in d and d["policy"] not in policies:
        raise PolicyError(f"{where}: unknown policy {_short(d['policy'])}, expected one of {', '.join(policies)}")
    source = d["source"]
    if not isinstance(source, Mapping) or "artifact" not in source or "sha256" not in source:
        raise BundleError(f"{where}: source must be {{artifact, sha256}}, got {_short(source)}")
    check_relpath(source["artifact"], f"{where}: source artifact")
    check_sha256(source["sha256"], f"{where}: source sha256")
    check_files(source.get("files", []), f"{where}: source")
    build = check_mapping(d.get("build"), f"{where}: build", optional=True) or {}
    tc = check_mapping(build.get("timing_cache"), f"{where}: build timing_cache", optional=True)
    if tc is not None:
        check_relpath(tc.get("artifact"), f"{where}: build timing_cache artifact")
        check_sha256(tc.get("sha256"), f"{where}: build timing_cache sha256")
    profiles = d["profiles"]
    if not isinstance(profiles, list) or not profiles:
        raise BundleError(f"{where}: expected a non-empty list of profiles, got {_short(profiles)}")
    for p in profiles:
        check_profile(p, where)
    names = [p["name"] for p in profiles]
    for n in names:
        if names.count(n) > 1:
            raise BundleError(f"{where}: profile name {n!r} appears twice")
    seen: dict[tuple, str] = {}
    for p in profiles:
        key = (p["backend"], p["precision"], repr(sorted((k, v["min"], v["opt"], v["max"]) for k, v in p["inputs"].items())))
        if key in seen:
            raise BundleError(f"{where}: profiles {seen[key]!r} and {p['name']!r} are the same profile (same shapes, "
                              "backend and precision); a bundle holds each once")
        seen[key] = p["name"]
