"""Start and stop a real ``tritonserver`` on a repository, bound to 127.0.0.1.

The binary: ``$MRDEPLOY_TRITONSERVER``, else the one the ``nvidia-pytriton`` wheel ships (with the
Python backend and a backend stub per Python version; scripts/setup.sh extracts it), else
``tritonserver`` on PATH (e.g. an NGC container, with its own backends).

For the wheel's server, the Python backend stub embeds this interpreter's libpython: its lib folder
(``sysconfig`` LIBDIR) goes on LD_LIBRARY_PATH, and this interpreter's bin folder goes first on PATH so
the stub's Python starts from this environment (its site-packages with numpy and mrdeploy).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from mrdeploy.errors import BackendUnavailable, InputError
from mrdeploy.triton.config import read_config


def _pytriton_dist() -> Path | None:
    """The ``tritonserver`` folder of the nvidia-pytriton wheel: extracted by scripts/setup.sh into
    ``$MRDEPLOY_ASSETS/pytriton`` or ``sys.prefix/mrdeploy-assets/pytriton`` (the package itself pins
    numpy<2, so it is not installed), else the installed ``pytriton`` package."""
    roots = [Path(os.environ["MRDEPLOY_ASSETS"]) / "pytriton"] if os.environ.get("MRDEPLOY_ASSETS") else []
    roots.append(Path(sys.prefix) / "mrdeploy-assets" / "pytriton")
    dists = [r / "pytriton" / "tritonserver" for r in roots]
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.origin:
        dists.append(Path(spec.origin).parent / "tritonserver")
    return next((d for d in dists if (d / "bin" / "tritonserver").is_file()), None)


def find_tritonserver() -> Path:
    """The tritonserver binary to run (see the module docstring); BackendUnavailable when there is none."""
    env = os.environ.get("MRDEPLOY_TRITONSERVER")
    if env:
        if not Path(env).is_file():
            raise BackendUnavailable(f"MRDEPLOY_TRITONSERVER={env} is not a file")
        return Path(env)
    dist = _pytriton_dist()
    if dist is not None:
        return dist / "bin" / "tritonserver"
    found = shutil.which("tritonserver")
    if found:
        return Path(found)
    raise BackendUnavailable(
        "no tritonserver found: run scripts/setup.sh (it extracts the one the nvidia-pytriton wheel ships), "
        "pip install 'mrdeploy[triton-server]', put tritonserver on PATH, or set MRDEPLOY_TRITONSERVER"
    )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check_port(port, what: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError(f"{what} must be a port number 1-65535, got {port!r}")
    if port_in_use(port):
        raise InputError(f"{what} {port} on 127.0.0.1 is in use: choose another port (or stop what uses it)")
    return port


class TritonServer:
    """``with TritonServer(repo) as s: ...``: tritonserver on 127.0.0.1, ready when ``start`` returns.

    http_port, grpc_port: default free ports. ``s.http_url`` / ``s.grpc_url`` are ``127.0.0.1:PORT``.
    """

    def __init__(self, repo: str | Path, http_port: int | None = None, grpc_port: int | None = None,
                 binary: str | Path | None = None, startup_timeout: float = 120.0):
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise InputError(f"{self.repo} is not a directory (expected a Triton model repository)")
        self.binary = Path(binary) if binary else find_tritonserver()
        self.http_port = _check_port(http_port, "HTTP port") if http_port is not None else free_port()
        self.grpc_port = _check_port(grpc_port, "gRPC port") if grpc_port is not None else free_port()
        if self.grpc_port == self.http_port:
            raise InputError(f"HTTP and gRPC ports must differ, got {self.http_port} for both")
        self.startup_timeout = startup_timeout
        self._work: Path | None = None  # backends and the log, made by start, removed by stop
        self.process: subprocess.Popen | None = None
        self.last_log = ""

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _backends(self) -> Path | None:
        """A backend directory with the Python backend and this Python's stub (wheel server only)."""
        dist = _pytriton_dist()
        if dist is None or self.binary.resolve() != (dist / "bin" / "tritonserver").resolve():
            return None
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise BackendUnavailable(f"the nvidia-pytriton wheel has no Python backend stub for Python {version}")
        backends = self._work / "backends"
        shutil.copytree(dist / "backends", backends)
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
        return backends

    def _check_backends(self, backends: Path | None) -> None:
        if backends is None:
            return
        have = sorted(p.name for p in backends.iterdir() if p.is_dir())
        for cfg_path in sorted(self.repo.glob("*/config.pbtxt")):
            cfg = read_config(cfg_path)
            need = cfg.backend or {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}.get(cfg.platform)
            if need not in have:
                raise BackendUnavailable(
                    f"model {cfg.name!r} needs Triton's {need!r} backend, which this tritonserver "
                    f"({self.binary}) does not have (it has {', '.join(have)}): write the repository with "
                    "--embedded, or serve it with a Triton build that has that backend"
                )

    def _env(self) -> dict:
        env = dict(os.environ)
        libs = [sysconfig.get_config_var("LIBDIR") or ""]
        dist = _pytriton_dist()
        if dist is not None:
            libs.append(str(dist.parent.parent / "nvidia_pytriton.libs"))
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    @property
    def log_path(self) -> Path | None:
        return self._work / "tritonserver.log" if self._work else None

    def start(self) -> TritonServer:
        if self.process is not None:
            raise InputError("this TritonServer is running already")
        self._work = Path(tempfile.mkdtemp(prefix="mrdeploy-triton-"))
        try:
            backends = self._backends()
            self._check_backends(backends)
        except BaseException:
            self._cleanup()
            raise
        cmd = [
            str(self.binary), f"--model-repository={self.repo}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false", "--exit-on-error=true", "--log-info=true",
        ]
        if backends is not None:
            cmd.append(f"--backend-directory={backends}")
        log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                            stdin=subprocess.DEVNULL)
        except OSError as e:
            self._cleanup()
            raise BackendUnavailable(f"cannot start {self.binary}: {e}") from None
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._cleanup()
                raise BackendUnavailable(f"tritonserver exited with code {code} before it was ready:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise BackendUnavailable(f"tritonserver was not ready after {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        """The server's log so far (kept after ``stop``)."""
        if self.log_path is not None and self.log_path.is_file():
            return self.log_path.read_text(errors="replace")
        return self.last_log

    def log_tail(self, lines: int = 8) -> str:
        """The server's error lines (glog ``E...``, model load failures) and its last lines."""
        text = self.log().splitlines()
        errors = [line for line in text if re.match(r"^E\d{4} ", line) or "failed to load" in line]
        tail = [line for line in text[-lines:] if line not in errors]
        return "\n".join(errors[-15:] + tail) or "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s) and remove its work folder."""
        p, self.process = self.process, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        self.last_log = self.log()
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
