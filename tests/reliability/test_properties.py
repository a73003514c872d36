"""Property tests: the manifest reader under random mutations of a valid manifest, and the profile-spec
parser under random text. Only mrdeploy's own errors, never another exception, never a file outside."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mrdeploy.runtime as rt
from mrdeploy.errors import MrdeployError, ProfileError
from mrdeploy.runtime.manifest import Manifest, verify_artifacts
from mrdeploy.runtime.profiles import check_profile, make_profile, parse_batch, parse_profile
from tests.bundles import make_bundle

# --- which files get opened: an audit hook, active only inside `_watch` --------------------------

_OPENED: list[str] | None = None


def _audit(event, args):
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


class _watch:
    def __enter__(self):
        global _OPENED
        _OPENED = []
        return self

    def __exit__(self, *exc):
        global _OPENED
        self.opened, _OPENED = _OPENED, None


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("prop")
    bundle = make_bundle(root / "b", "cls", profiles=["small=32-64@48", "large=96-160@128"])
    (root / "outside.onnx").write_bytes((bundle / "profiles" / "small.onnx").read_bytes())
    os.symlink(root / "outside.onnx", bundle / "profiles" / "link.onnx")  # a way out, for mutations to find
    data = json.loads((bundle / "manifest.json").read_text())
    return bundle, data


def _paths(node, prefix=()):
    """Every (path, value) in a JSON tree, the root included."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


HOSTILE = st.sampled_from(["/etc/passwd", "../../../../etc/passwd", "profiles/../../outside.onnx", "profiles/link.onnx",
                           "profiles", "", "model.onnx", "profiles/small.onnx", "C:\\x", "a\x00b", "0" * 64])
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                 st.text(max_size=8), HOSTILE)
VALUES = st.recursive(LEAF, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
                      max_leaves=8)


PATH_FIELDS = [("source", "artifact"), ("profiles", 0, "artifact"), ("profiles", 1, "artifact"),
               ("profiles", 0, "calibration"), ("build", "timing_cache")]


@st.composite
def mutated(draw, data):
    d = copy.deepcopy(data)
    if draw(st.booleans()):  # aim at a path field: the ways out of the bundle
        where = draw(st.sampled_from(PATH_FIELDS))
        parent = d
        for k in where[:-1]:
            parent = parent[k]
        value = draw(HOSTILE)
        sha = data["profiles"][0]["sha256"]  # outside.onnx has these bytes: a matching hash
        parent[where[-1]] = ({"cache": value, "cache_sha256": sha} if where[-1] == "calibration" else
                             {"artifact": value, "sha256": sha} if where[-1] == "timing_cache" else value)
        if where[-1] == "artifact" and where[0] == "profiles":
            parent["sha256"] = sha
    for _ in range(draw(st.integers(0, 3))):
        spots = list(_paths(d))
        path, _ = spots[draw(st.integers(0, len(spots) - 1))]
        if not path:
            d = draw(VALUES) if draw(st.integers(0, 9)) == 0 else d
            continue
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        how = draw(st.sampled_from(["replace", "delete", "hostile"]))
        if how == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(HOSTILE if how == "hostile" else VALUES)
        if not isinstance(d, (dict, list)):
            break
    return d


def _outside(opened, root):
    """The opened files that are neither inside ``root`` (links resolved) nor Python's own modules."""
    out = []
    for p in opened:
        real = os.path.realpath(p)
        if os.path.commonpath([root, real]) == root or real.endswith((".py", ".pyc", ".so")) or "/lib/python" in real:
            continue
        out.append(real)
    return out


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_manifests_give_mrdeploy_errors_and_open_nothing_outside(base, tmp_path, data):
    bundle, original = base
    d = data.draw(mutated(original))
    work = tmp_path / "b"
    if not work.exists():
        shutil.copytree(bundle, work, symlinks=True)
    (work / "manifest.json").write_text(json.dumps(d))
    root = os.path.realpath(work)
    with _watch() as w:
        try:
            m = Manifest.read(work)
            verify_artifacts(work, m)
            rt.load(work).close()
        except MrdeployError:
            pass
    assert not _outside(w.opened, root)


def test_the_watch_sees_what_a_valid_bundle_opens(base, tmp_path):
    bundle, _ = base
    with _watch() as w:
        verify_artifacts(bundle, Manifest.read(bundle))
    names = sorted({Path(p).name for p in w.opened})
    assert names == ["large.onnx", "manifest.json", "model.onnx", "small.onnx"] and not _outside(w.opened, str(bundle))
    with _watch() as w:
        open(tmp_path.parent / "x", "w").close()
    assert _outside(w.opened, str(bundle))  # the check can fail


# --- the profile-spec parser ----------------------------------------------------------------------

SPEC_TEXT = st.text(alphabet="0123456789x-@,:=ab_ ", max_size=24)


@settings(max_examples=300, deadline=None)
@given(SPEC_TEXT, st.one_of(st.none(), st.text(alphabet="0123456789-@x ", max_size=8)))
def test_any_profile_text_parses_or_gives_a_profile_error(text, batch):
    try:
        spec = parse_profile(text)
        b = parse_batch(batch)
        names = [n for n in spec.inputs if n is not None] or ["input"]
        p = make_profile(spec, {n: 3 for n in names}, b)
        check_profile(p)
    except ProfileError as e:
        assert str(e)  # a message, never empty
        return
    for r in p.inputs.values():  # what parses is a valid range
        assert all(lo <= o <= hi for lo, o, hi in zip(r.min, r.opt, r.max)) and min(r.min) >= 1


SIDE = st.integers(1, 4096)


@settings(max_examples=200, deadline=None)
@given(SIDE, SIDE, SIDE, SIDE, st.data())
def test_well_formed_specs_round_trip(h0, w0, h1, w1, data):
    lo, hi = (min(h0, h1), min(w0, w1)), (max(h0, h1), max(w0, w1))
    opt = (data.draw(st.integers(lo[0], hi[0])), data.draw(st.integers(lo[1], hi[1])))
    text = f"p={lo[0]}x{lo[1]}-{hi[0]}x{hi[1]}@{opt[0]}x{opt[1]}"
    p = make_profile(parse_profile(text), {"input": 3})
    r = p.inputs["input"]
    assert (r.min[2:], r.opt[2:], r.max[2:]) == (lo, opt, hi)
    again = make_profile(parse_profile(p.describe()), {"input": 3})
    assert again == p  # describe() reads back as the same profile
