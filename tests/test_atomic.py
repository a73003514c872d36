import os
import stat

import pytest

from mrdeploy._atomic import atomic_dir, atomic_file


def test_atomic_file_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "a.txt"
    with atomic_file(out) as tmp:
        tmp.write_text("one")
        assert not out.exists()
    assert out.read_text() == "one"
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()
    with pytest.raises(RuntimeError), atomic_file(out) as tmp:
        tmp.write_text("two")
        raise RuntimeError("crash")
    assert out.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_dir_replaces_whole(tmp_path):
    out = tmp_path / "bundle"
    manifest = '{"format": "mrdeploy-bundle"}'
    with atomic_dir(out, "bundle") as tmp:
        (tmp / "x").write_text("1")
        (tmp / "manifest.json").write_text(manifest)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()
    with pytest.raises(RuntimeError), atomic_dir(out, "bundle") as tmp:
        (tmp / "y").write_text("2")
        raise RuntimeError("crash")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "x"]
    with atomic_dir(out, "bundle") as tmp:
        (tmp / "z").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m
