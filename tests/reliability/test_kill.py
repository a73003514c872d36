"""Kill a real build (SIGKILL at several moments, SIGTERM once): the output is absent or complete, and
after the next run nothing of the killed runs remains, beside the output or in $TMPDIR."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mrdeploy._atomic import RUN_PREFIX, atomic_dir
from mrdeploy.runtime.manifest import Manifest, verify_artifacts
from tests.bundles import make_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    make_model(root / "tiny.onnx", "cls")
    np.save(root / "calib.npy", np.random.default_rng(0).random((12, 3, 64, 64), dtype=np.float32))
    (root / "tmp").mkdir()
    return root


def _args(root, out):
    return ["build-engine", str(root / "tiny.onnx"), "-o", str(out), "--profile", "a=32-64@48", "--profile", "b=96",
            "--profile", "c=128", "--precision", "int8", "--calib-data", str(root / "calib.npy"),
            "--calib-samples", "4", "-q"]


def _start(root, out):
    env = dict(os.environ, TMPDIR=str(root / "tmp"), PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "mrdeploy", *_args(root, out)], env=env, cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(proc, condition, timeout=60.0) -> bool:
    """Poll until ``condition()``; False if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("the build neither reached the moment nor ended")


def _ours(root, out):
    beside = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    mine = f"{RUN_PREFIX}{os.getpid()}-"  # this test process's own run directory (a live process's)
    in_tmp = [p.name for p in (root / "tmp").iterdir() if p.name.startswith("mrdeploy") and not p.name.startswith(mine)]
    return beside, in_tmp


def _absent_or_complete(out, profiles=("a", "b", "c")):
    if not out.exists():
        return "absent"
    m = Manifest.read(out)
    verify_artifacts(out, m)
    assert [e.name for e in m.profiles] == list(profiles)
    return "complete"


def test_sigkill_at_several_moments_then_a_clean_build(setup, cli, monkeypatch):
    root = setup
    out = root / "out" / "b"
    out.parent.mkdir()
    moments = {
        "output temp created": lambda: any(p.name.startswith(".b.mrdeploy-") for p in out.parent.iterdir()),
        "calibrating (run dir in $TMPDIR)": lambda: any(p.name.startswith(RUN_PREFIX) for p in (root / "tmp").iterdir()),
        "one profile written": lambda: any((p / "profiles" / "a.onnx").exists() for p in out.parent.glob(".b.mrdeploy-*.tmp")),
    }
    leftovers = {}
    for moment, reached in moments.items():
        proc = _start(root, out)
        hit = _wait_for(proc, reached)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert hit, f"{moment}: the build ended before the kill ({proc.stderr.read().decode()[-300:]})"
        assert _absent_or_complete(out) == "absent", moment
        leftovers[moment] = _ours(root, out)
    assert any(b for b, _ in leftovers.values()) and any(t for _, t in leftovers.values())  # kills leave debris...
    monkeypatch.setenv("TMPDIR", str(root / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    code, _, err = cli(*_args(root, out))
    assert code == 0, err
    assert _absent_or_complete(out) == "complete"
    assert _ours(root, out) == ([], [])  # ...that the next run removes


def test_sigkill_while_replacing_keeps_the_old_bundle(setup, cli):
    root = setup
    out = root / "replace" / "b"
    out.parent.mkdir()
    assert cli(*_args(root, out))[0] == 0
    before = (out / "manifest.json").read_text()
    proc = _start(root, out)
    assert _wait_for(proc, lambda: any((p / "profiles" / "b.onnx").exists() for p in out.parent.glob(".b.mrdeploy-*.tmp")))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _absent_or_complete(out) == "complete" and (out / "manifest.json").read_text() == before


def test_sigterm_cleans_up_at_once(setup):
    root = setup
    out = root / "term" / "b"
    out.parent.mkdir()
    proc = _start(root, out)
    assert _wait_for(proc, lambda: any(p.name.startswith(RUN_PREFIX) for p in (root / "tmp").iterdir()
                                       if str(proc.pid) in p.name))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not out.exists()
    beside, in_tmp = _ours(root, out)
    assert beside == [] and not [n for n in in_tmp if f"-{proc.pid}-" in n]


def test_a_bundle_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    old = tmp_path / f".b.mrdeploy-{p.pid}-1.old"  # killed between moving the old bundle aside and renaming
    old.mkdir()
    (old / "manifest.json").write_text('{"format": "mrdeploy-bundle"}')
    with atomic_dir(tmp_path / "b", "bundle") as tmp:
        assert (tmp_path / "b" / "manifest.json").is_file()  # put back before anything else
        (tmp / "manifest.json").write_text('{"format": "mrdeploy-bundle", "new": 1}')
    assert "new" in (tmp_path / "b" / "manifest.json").read_text()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["b"]
