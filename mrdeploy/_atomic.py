"""Where mrdeploy writes: outputs replaced whole and only when mrdeploy wrote them; one temp dir per run.

Three rules, one module (pure Python: the runtime imports it):

- **Atomic outputs.** ``atomic_file`` / ``atomic_dir`` yield a temporary path beside the output and
  rename it into place on success; a crash never leaves half an output.
- **Replace only what mrdeploy wrote.** An existing output is replaced when it is absent or empty, when
  it is the same kind of output (a bundle over a bundle: a directory whose ``manifest.json`` says
  ``mrdeploy-bundle``; a calibration output over one: ``*.calib.json`` records; an ONNX model over an
  ONNX model), or, with ``force``, when it is another kind of mrdeploy output. Anything else (a user's
  source tree, a text file) is refused with an OutputError naming what is there; ``force`` does not
  change that.
- **Temporary state.** Everything temporary of one run lives under one directory,
  ``$TMPDIR/mrdeploy-run-<pid>-<start>`` (:func:`run_tempdir`), removed at exit; the CLI also removes it
  on SIGTERM/SIGHUP (:func:`install_signal_cleanup`). A run killed with SIGKILL cannot clean up, so every
  run removes the run directories, and the temporaries beside its output, of processes that are gone.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from mrdeploy.errors import OutputError

RUN_PREFIX = "mrdeploy-run-"
KINDS = ("bundle", "calibration", "onnx", "profiles", "triton")
TRITON_MARKER = "mrdeploy-triton.json"  # written by `mrdeploy triton` into the repository it writes
_KIND_TEXT = {"bundle": "an mrdeploy bundle", "calibration": "an mrdeploy calibration output",
              "triton": "a Triton repository written by `mrdeploy triton`",
              "onnx": "an ONNX model", "profiles": "a profiles file written by `mrdeploy profiles plan`"}
PROFILES_HEADER = "# written by `mrdeploy profiles plan`"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- processes: who owns a temporary ------------------------------------------------------------


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for
    the process that made a temporary; "0" where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _token() -> str:
    return f"{os.getpid()}-{_start_time(os.getpid())}"


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return start == "0" or _start_time(pid) in (start, "0")


_OWNER = re.compile(r"(\d+)-(\d+)")


def _stale(owner: str) -> bool:
    """True when ``owner`` ("<pid>-<start>...", the rest of a temporary's name after its prefix) names
    a process that no longer runs."""
    m = _OWNER.match(owner)
    return bool(m) and not _alive(int(m.group(1)), m.group(2))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def _sweep_beside(final: Path) -> None:
    """Remove the temporaries of dead runs beside ``final``; put back an output a killed run had moved
    aside and not yet replaced."""
    prefix = f".{final.name}.mrdeploy-"
    try:
        siblings = [p for p in final.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for p in siblings:
        if not _stale(p.name[len(prefix):]):
            continue
        if p.name.endswith(".old") and not final.exists() and not final.is_symlink():
            with contextlib.suppress(OSError):
                os.replace(p, final)
                continue
        _remove(p)


# --- the run's temporary directory ----------------------------------------------------------------

_run_dir: Path | None = None
_run_lock = threading.Lock()


def run_tempdir() -> Path:
    """This process's temporary directory (created on first use, removed at exit). Put every temporary
    file of a run under it: ``tempfile.TemporaryDirectory(prefix=..., dir=run_tempdir())``."""
    global _run_dir
    with _run_lock:
        if _run_dir is None or not _run_dir.is_dir():
            base = Path(tempfile.gettempdir())
            remove_stale(base)
            _run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{_token()}-", dir=base))
            atexit.register(cleanup_run_tempdir)
        return _run_dir


def cleanup_run_tempdir() -> None:
    """Remove this process's run directory (idempotent)."""
    global _run_dir
    d, _run_dir = _run_dir, None
    if d is not None:
        shutil.rmtree(d, ignore_errors=True)


def remove_stale(base: str | os.PathLike | None = None) -> list[Path]:
    """Remove the run directories in ``base`` (default: the temp dir) of processes that are gone."""
    base = Path(base or tempfile.gettempdir())
    removed = []
    try:
        entries = [p for p in base.iterdir() if p.name.startswith(RUN_PREFIX)]
    except OSError:
        return removed
    for p in entries:
        if _stale(p.name[len(RUN_PREFIX):]):
            _remove(p)
            removed.append(p)
    return removed


def install_signal_cleanup() -> None:
    """SIGTERM and SIGHUP end the process through SystemExit (so every ``finally`` runs: temporaries
    beside an output are removed, the run directory too). Main thread only; keeps handlers others set."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _exit_on_signal)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


# --- what is at an output path --------------------------------------------------------------------


def _json_format(path: Path) -> object:
    try:
        if path.stat().st_size > 64 << 20:
            return None
        return json.loads(path.read_text()).get("format")
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return None


def looks_like_onnx(path: str | os.PathLike) -> bool:
    """True when the file parses as an ONNX ModelProto's top level: known field numbers with their wire
    types, an ir_version and a graph (protobuf walked field by field, without onnx)."""
    fields = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
    seen = set()
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size

            def varint() -> int:
                out = shift = 0
                while True:
                    b = f.read(1)
                    if not b or shift > 63:
                        raise ValueError
                    out |= (b[0] & 0x7F) << shift
                    shift += 7
                    if not b[0] & 0x80:
                        return out

            for _ in range(100_000):
                if f.tell() == size:
                    break
                tag = varint()
                num, wire = tag >> 3, tag & 7
                if fields.get(num) != wire:
                    return False
                seen.add(num)
                n = varint()
                if wire == 2:
                    if f.tell() + n > size:
                        return False
                    f.seek(n, os.SEEK_CUR)
    except (OSError, ValueError):
        return False
    return {1, 7} <= seen


def kind_of(path: str | os.PathLike) -> str | None:
    """What is at ``path``: "absent", "empty", one of :data:`KINDS`, or None (not mrdeploy's)."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return "absent"
    if p.is_symlink():
        return None
    if p.is_dir():
        entries = list(p.iterdir())
        if not entries:
            return "empty"
        if _json_format(p / "manifest.json") == "mrdeploy-bundle":
            return "bundle"
        if any(e.name.endswith(".calib.json") and _json_format(e) == "mrdeploy-calibration-record" for e in entries):
            return "calibration"
        if (p / TRITON_MARKER).is_file():
            return "triton"
        return None
    if p.is_file():
        if p.stat().st_size == 0:
            return "empty"
        if looks_like_onnx(p):
            return "onnx"
        with contextlib.suppress(OSError, UnicodeDecodeError), open(p, encoding="utf-8") as f:
            if f.read(len(PROFILES_HEADER)) == PROFILES_HEADER:
                return "profiles"
    return None


def _describe(p: Path) -> str:
    if p.is_symlink():
        return f"a symbolic link to {os.readlink(p)}"
    if p.is_dir():
        names = sorted(e.name + ("/" if e.is_dir() else "") for e in p.iterdir())
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        return f"a directory with {len(names)} entries ({shown})"
    if p.is_file():
        return f"a {p.stat().st_size}-byte file"
    return "something that is neither a file nor a directory"


def check_output(path: str | os.PathLike, kind: str | None, force: bool = False, directory: bool = True) -> Path:
    """Raise OutputError unless ``path`` may be written as ``kind`` (see the module docstring)."""
    if path is None or not os.fspath(path):
        raise OutputError(f"output path: expected a {'directory' if directory else 'file'} path, got {path!r}")
    p = Path(path)
    there = kind_of(p)
    if there == "absent":
        return p
    want = _KIND_TEXT.get(kind, "an mrdeploy output") if kind else "an mrdeploy output"
    if not p.is_symlink() and p.is_dir() != directory:
        raise OutputError(f"{p}: expected a {'directory' if directory else 'file'} path for {want}, got {_describe(p)}")
    if there == "empty" or (there in KINDS and (there == kind or force)):
        return p
    if there in KINDS:
        raise OutputError(f"{p}: already holds {_KIND_TEXT[there]}, expected {want} or nothing there; "
                          "pass --force (force=True) to replace it")
    raise OutputError(
        f"{p}: refusing to replace {_describe(p)}: it is not {want} or any other output of mrdeploy, "
        "which replaces only what it wrote (with --force too); choose another output path or move it away"
    )


# --- atomic writes ----------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, kind: str | None = None, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it onto ``final``, else delete it.
    With ``kind`` an existing ``final`` must be replaceable (:func:`check_output`); without, it is
    replaced (report files inside a directory the user named)."""
    final = Path(final)
    if kind is not None:
        check_output(final, kind, force, directory=False)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_beside(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.mrdeploy-{_token()}-", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result is an ordinary file
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, kind: str | None = None, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``final``; on success it replaces ``final`` whole.
    An existing ``final`` must be replaceable as ``kind`` (:func:`check_output`), checked before and
    again right before the swap."""
    final = Path(final)
    if final.parent.is_dir():
        _sweep_beside(final)  # first: it may put back an output a killed run had moved aside
    check_output(final, kind, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    token = _token()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.mrdeploy-{token}-", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary directory
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            check_output(final, kind, force)  # it may have changed during a long build
            old = final.with_name(f".{final.name}.mrdeploy-{token}.old")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(final: str | os.PathLike, text: str, kind: str | None = None, force: bool = False) -> Path:
    with atomic_file(final, kind, force) as tmp:
        tmp.write_text(text)
    return Path(final)
