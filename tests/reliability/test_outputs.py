"""Never lose a user's data: an output replaces only what mrdeploy wrote; temporaries never outlive a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from mrdeploy._atomic import RUN_PREFIX, atomic_dir, check_output, kind_of, run_tempdir
from mrdeploy.errors import OutputError
from tests.bundles import make_bundle, make_model

PROFILE = ["--profile", "s=32-64@48"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "tiny.onnx", "cls")


def _user_tree(root):
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('mine')\n")
    return root


@pytest.mark.parametrize("force", [False, True])
def test_build_engine_refuses_a_directory_mrdeploy_did_not_write(tiny, tmp_path, cli, force):
    out = _user_tree(tmp_path / "proj")
    code, _, err = cli("build-engine", tiny, "-o", out, *PROFILE, "-q", *(["--force"] if force else []))
    assert code == 1 and "Traceback" not in err
    assert f"{out}: refusing to replace a directory with 1 entries (src/)" in err
    assert "not an mrdeploy bundle or any other output of mrdeploy" in err
    assert (out / "src" / "main.py").read_text() == "print('mine')\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # nothing written beside it either


def test_calibrate_refuses_a_directory_mrdeploy_did_not_write(tiny, tmp_path, cli):
    out = _user_tree(tmp_path / "proj")
    data = tmp_path / "calib.npy"
    np.save(data, np.zeros((2, 3, 48, 48), np.float32))
    code, _, err = cli("calibrate", tiny, "--profile", "s=48", "--calib-data", data, "-o", out, "--force")
    assert code == 1 and f"{out}: refusing to replace a directory with 1 entries (src/)" in err
    assert (out / "src" / "main.py").is_file()


def test_export_refuses_a_file_that_is_not_an_onnx_model(tmp_path, cli):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    code, _, err = cli("export", "examples/resformer.py:resformer_tiny", "-o", notes)
    assert code == 1 and f"{notes}: refusing to replace a 9-byte file: it is not an ONNX model" in err
    assert notes.read_text() == "my notes\n"
    code, _, err = cli("export", "examples/resformer.py:resformer_tiny", "-o", "")
    assert code == 1 and "mrdeploy: error: output path: expected a file path, got ''" in err
    assert "Traceback" not in err


def test_profiles_plan_refuses_a_user_file(tmp_path, cli):
    mine = tmp_path / "profiles.yaml"
    mine.write_text("mine: true\n")
    (tmp_path / "sizes.txt").write_text("64x64\n")
    code, _, err = cli("profiles", "plan", "--sizes-from", tmp_path / "sizes.txt", "-o", mine)
    assert code == 1 and "refusing to replace a 11-byte file" in err and mine.read_text() == "mine: true\n"


def test_same_kind_is_replaced_other_mrdeploy_kind_needs_force(tiny, tmp_path, cli):
    out = tmp_path / "b"
    assert cli("build-engine", tiny, "-o", out, *PROFILE, "-q")[0] == 0
    assert kind_of(out) == "bundle"
    assert cli("build-engine", tiny, "-o", out, "--profile", "t=64", "-q")[0] == 0  # a bundle over a bundle
    assert [p["name"] for p in json.loads((out / "manifest.json").read_text())["profiles"]] == ["t"]
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "s.calib.json").write_text(json.dumps({"format": "mrdeploy-calibration-record"}))
    code, _, err = cli("build-engine", tiny, "-o", calib, *PROFILE, "-q")
    assert code == 1 and f"{calib}: already holds an mrdeploy calibration output, expected an mrdeploy bundle" in err
    assert "pass --force" in err and (calib / "s.calib.json").is_file()
    assert cli("build-engine", tiny, "-o", calib, *PROFILE, "-q", "--force")[0] == 0
    assert kind_of(calib) == "bundle"
    onnx_out = tmp_path / "m.onnx"
    onnx_out.write_bytes(tiny.read_bytes())
    assert check_output(onnx_out, "onnx", directory=False) == onnx_out  # an ONNX model over an ONNX model
    with pytest.raises(OutputError, match="expected a file path for an ONNX model, got a directory"):
        check_output(out, "onnx", directory=False)


def test_a_symlink_at_the_output_is_never_followed_or_replaced(tmp_path):
    target = make_bundle(tmp_path / "real", "cls")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="refusing to replace a symbolic link"):
        with atomic_dir(link, "bundle"):
            pass
    assert link.is_symlink() and (target / "manifest.json").is_file()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_next_run_removes_what_dead_runs_left(tiny, tmp_path, cli, monkeypatch):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    dead = _dead_pid()
    stale_run = tmpdir / f"{RUN_PREFIX}{dead}-123-abc"
    (stale_run / "mrdeploy-int8-x").mkdir(parents=True)
    live_run = tmpdir / f"{RUN_PREFIX}{os.getppid()}-0-abc"  # a live process's: kept
    live_run.mkdir()
    out = tmp_path / "b"
    stale_tmp = tmp_path / f".b.mrdeploy-{dead}-123-xyz.tmp"
    stale_tmp.mkdir()
    (stale_tmp / "model.onnx").write_bytes(b"half")
    mine = tmp_path / ".b.notes"  # a user's file that looks nothing like mrdeploy's: kept
    mine.write_text("x")
    assert cli("build-engine", tiny, "-o", out, *PROFILE, "-q")[0] == 0
    assert not stale_run.exists() and not stale_tmp.exists()
    assert live_run.is_dir() and mine.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.notes", "b", "tmp"]


def test_run_tempdir_is_per_process_and_removed_at_exit(tmp_path):
    code = ("import mrdeploy._atomic as a, pathlib; d = a.run_tempdir(); (d / 'x').write_text('1'); "
            "print(d)")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    d = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert d.startswith(str(tmp_path / RUN_PREFIX)) and not os.path.exists(d)
    assert run_tempdir() == run_tempdir()
