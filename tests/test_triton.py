"""``mrdeploy triton``: a repository for a 3-profile bundle of a real model (MTCNN P-Net), every config
parsed with Triton's ModelConfig schema, served by a real tritonserver (the nvidia-pytriton wheel's)
over HTTP and gRPC and compared with the Runner; bad input."""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

import mrdeploy
import mrdeploy.runtime as rt
from mrdeploy.errors import BackendUnavailable, InputError, MrdeployError
from mrdeploy.triton import TritonServer, config, read_repository, write_repository
from mrdeploy.triton.check import check_served
from tests.bundles import make_bundle
from tests.test_cli_run import run_cli

PROFILES = ["small=24-48@32", "mid=48-96@64", "s128=128"]
# (H, W) -> the profile the Runner picks and how (pad: between mid's max 96 and s128)
SIZES = {(30, 41): ("small", "exact"), (64, 64): ("mid", "exact"), (70, 90): ("mid", "exact"),
         (128, 128): ("s128", "exact"), (100, 110): ("s128", "pad"), (20, 20): ("small", "pad")}


@pytest.fixture(scope="module")
def pnet_bundle(tmp_path_factory):
    """MTCNN P-Net with its real weights, exported once, built with 3 profiles and batch 1-4."""
    from examples.real.models import MTCNN_MEAN, MTCNN_STD
    from mrdeploy.exporter.api import export
    from mrdeploy.exporter.build import build_bundle

    d = tmp_path_factory.mktemp("pnet")
    export("examples/real/models.py:mtcnn_pnet", (1, 3, 48, 48), d / "pnet.onnx", min_size=(12, 12),
           max_size=(256, 256), mean=MTCNN_MEAN, std=MTCNN_STD, task="dense", name="mtcnn-pnet",
           output_names=["prob", "boxes"], validate=False)
    build_bundle(d / "pnet.onnx", d / "bundle", PROFILES, batch="1-4@1", threads=1, quiet=True)
    return d / "bundle"


@pytest.fixture(scope="module")
def triton_ok(tmp_path_factory):
    """Skip (with the reason) only when tritonserver itself cannot start here: probed on an empty
    repository, so a repository of ours that fails to load is a failure, not a skip."""
    empty = tmp_path_factory.mktemp("empty-repo")
    try:
        with TritonServer(empty, startup_timeout=60):
            pass
    except BackendUnavailable as e:
        pytest.skip(f"tritonserver cannot start on this machine: {e}")


def _serve(request, repo) -> TritonServer:
    server = TritonServer(repo)
    request.addfinalizer(server.stop)  # stopped even when the test fails
    server.start()
    return server


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_repository_configs_follow_triton_schema(tmp_path, pnet_bundle):
    repo = mrdeploy.triton(pnet_bundle, tmp_path / "repo", instances=2, max_delay_ms=0.5)
    assert repo.models == ["mtcnn-pnet", "mtcnn-pnet_small", "mtcnn-pnet_mid", "mtcnn-pnet_s128"]
    configs = {p.parent.name: config.read_config(p) for p in (tmp_path / "repo").glob("*/config.pbtxt")}
    assert sorted(configs) == sorted(repo.models)
    front = configs["mtcnn-pnet"]
    assert (front.backend, front.max_batch_size) == ("python", 0)
    assert [list(t.dims) for t in front.input] == [[-1, 3, -1, -1]]
    assert {t.name: list(t.dims) for t in front.output} == {"prob": [-1, 2, -1, -1], "boxes": [-1, 4, -1, -1]}
    manifest = rt.Manifest.read(pnet_bundle)
    for e in manifest.profiles:
        cfg = configs[f"mtcnn-pnet_{e.name}"]
        assert (cfg.platform, cfg.backend, cfg.max_batch_size) == ("onnxruntime_onnx", "onnxruntime", 4)
        static = e.name == "s128"
        assert list(cfg.input[0].dims) == ([3, 128, 128] if static else [3, -1, -1])
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
        assert [(g.count, config.pb().ModelInstanceGroup.Kind.Name(g.kind)) for g in cfg.instance_group] == [(2, "KIND_CPU")]
        assert cfg.parameters["intra_op_thread_count"].string_value == "1"
        assert _sha(tmp_path / "repo" / cfg.name / "1" / "model.onnx") == e.sha256
    assert read_repository(tmp_path / "repo").profile_models == repo.profile_models


def test_schema_refuses_what_triton_would(tmp_path):
    with pytest.raises(MrdeployError, match="not a valid Triton ModelConfig"):
        config.parse_pbtxt('name: "m" backend: "python" max_batch_sise: 4')
    with pytest.raises(MrdeployError, match="dynamic_batching needs max_batch_size >= 1"):
        config.parse_pbtxt('name: "m" backend: "python" dynamic_batching {} '
                           'input { name: "x" data_type: TYPE_FP32 dims: [3] } '
                           'output { name: "y" data_type: TYPE_FP32 dims: [3] }')
    with pytest.raises(MrdeployError, match=r"dims \[3, 0\]: each is -1 or >= 1"):
        config.parse_pbtxt('name: "m" backend: "python" input { name: "x" data_type: TYPE_FP32 dims: [3, 0] } '
                           'output { name: "y" data_type: TYPE_FP32 dims: [3] }')


def test_bad_input(tmp_path, pnet_bundle):
    nobatch = make_bundle(tmp_path / "nobatch", "cls")  # built without batch ranges
    with pytest.raises(InputError, match=r"max_batch 8 is more than the bundle's profiles serve \(small: batch 1-1"
                                         r".*--batch 1-8@1"):
        write_repository(nobatch, tmp_path / "r1", max_batch=8)
    with pytest.raises(InputError, match=r"max_batch 8 is more than .*mid: batch 1-4"):
        write_repository(pnet_bundle, tmp_path / "r1", max_batch=8)
    with pytest.raises(InputError, match="instances must be an integer of at least 1, got 0"):
        write_repository(pnet_bundle, tmp_path / "r1", instances=0)
    with pytest.raises(InputError, match="kind must be one of cpu, gpu, got 'tpu'"):
        write_repository(pnet_bundle, tmp_path / "r1", kind="tpu")
    assert not (tmp_path / "r1").exists()  # nothing half-written
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not a repository mrdeploy wrote, so it is left alone"):
        write_repository(pnet_bundle, mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep"
    write_repository(pnet_bundle, tmp_path / "r2", embedded=True)
    with pytest.raises(InputError, match=r"a repository mrdeploy wrote: pass overwrite=True \(--force\)"):
        write_repository(pnet_bundle, tmp_path / "r2")
    assert write_repository(pnet_bundle, tmp_path / "r2", overwrite=True).profile_models  # replaced whole


def test_cli_bad_input(capsys, tmp_path, pnet_bundle):
    code, _, err = run_cli(capsys, "triton", make_bundle(tmp_path / "nb", "cls"), "-o", tmp_path / "r", "--max-batch", "8")
    assert code == 1 and err.startswith("mrdeploy: error: max_batch 8 is more than the bundle's profiles serve")
    code, _, err = run_cli(capsys, "triton", pnet_bundle, "-o", tmp_path / "r", "--instances", "-1")
    assert code == 1 and "instances must be an integer of at least 1, got -1" in err
    code, out, err = run_cli(capsys, "triton", pnet_bundle, "-o", tmp_path / "r", "--embedded")
    assert code == 0, err
    assert "wrote" in out and "mtcnn-pnet/config.pbtxt" in out and "embedded" in out
    with socket.socket() as s:  # a port in use when serving
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run_cli(capsys, "triton", "--serve", tmp_path / "r", "--http-port", port)
    assert code == 1
    assert f"mrdeploy: error: HTTP port {port} on 127.0.0.1 is in use" in err


def test_served_embedded_equals_runner(request, tmp_path, pnet_bundle, triton_ok):
    """The real server serves mixed sizes (HTTP and gRPC, concurrent clients) like the Runner (<= 1e-5)."""
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    repo = write_repository(pnet_bundle, tmp_path / "repo", embedded=True, instances=2)
    server = _serve(request, repo.path)
    rows = check_served(server, repo)  # every profile's min/opt/max and a size off each opt
    assert {r.profile for r in rows} == {"small", "mid", "s128"} and {r.protocol for r in rows} == {"http", "grpc"}
    assert max(r.max_abs_err for r in rows) <= 1e-5

    runner = rt.load(pnet_bundle)
    rng = np.random.default_rng(1)
    feeds = {hw: rng.standard_normal((1, 3, *hw)).astype(np.float32) for hw in SIZES}
    errors, results = [], {}

    def client(protocol, hws):
        mod = thttp if protocol == "http" else tgrpc
        c = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
        try:
            for hw in hws:
                i = mod.InferInput("input", [1, 3, *hw], "FP32")
                i.set_data_from_numpy(feeds[hw])
                r = c.infer("mtcnn-pnet", [i])
                results[(protocol, hw)] = {n: r.as_numpy(n) for n in ("prob", "boxes")}
        except Exception as e:  # surfaced below
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(p, list(SIZES)[k::2])) for p in ("http", "grpc") for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 2 * len(SIZES)
    for (protocol, hw), got in results.items():
        ref, info = runner.run_with_info(feeds[hw])
        assert (info.decision.profile.name, info.decision.action) == SIZES[hw]
        for n in ("prob", "boxes"):
            assert got[n].shape == ref[n].shape
            assert np.max(np.abs(got[n] - ref[n])) <= 1e-5, (protocol, hw, n)

    # an input the runtime refuses: the caller gets mrdeploy's message, the model keeps serving
    c = thttp.InferenceServerClient(server.http_url)
    bad = feeds[(64, 64)].copy()
    bad[0, 0, 0, 0] = np.nan
    i = thttp.InferInput("input", list(bad.shape), "FP32")
    i.set_data_from_numpy(bad)
    with pytest.raises(Exception, match=r"mrdeploy: input 'input': expected finite values, got 1 NaN/Inf"):
        c.infer("mtcnn-pnet", [i])
    c.close()
    assert server.ready()
    server.stop()
    assert server.process is None and not server.ready()


def _python_profile_models(repo) -> None:
    """Turn each per-profile model of a BLS repository into a Python-backend model that runs its
    model.onnx with ONNX Runtime (this Triton build has no onnxruntime backend); configs otherwise kept."""
    body = (
        "import numpy as np, onnxruntime as ort\n"
        "import triton_python_backend_utils as pb_utils\n"
        "from pathlib import Path\n"
        "from mrdeploy.triton.front import to_numpy, to_tensor\n"
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        so = ort.SessionOptions(); so.intra_op_num_threads = 1\n"
        "        self.s = ort.InferenceSession(str(Path(__file__).with_name('model.onnx')), so)\n"
        "        self.names = [o.name for o in self.s.get_outputs()]\n"
        "    def execute(self, requests):\n"
        "        out = []\n"
        "        for r in requests:\n"
        "            x = to_numpy(pb_utils.get_input_tensor_by_name(r, 'input'))\n"
        "            ys = self.s.run(self.names, {'input': x})\n"
        "            out.append(pb_utils.InferenceResponse([to_tensor(n, y) for n, y in zip(self.names, ys)]))\n"
        "        return out\n"
    )
    for model in repo.profile_models.values():
        path = repo.path / model / "config.pbtxt"
        cfg = config.read_config(path)
        cfg.ClearField("platform")
        cfg.ClearField("default_model_filename")  # the Python backend reads it as the script name
        cfg.backend = "python"
        path.write_text(config.to_pbtxt(cfg))
        (repo.path / model / "1" / "model.py").write_text(body)


def test_served_bls_front_equals_runner(request, tmp_path, pnet_bundle, triton_ok):
    """The BLS front model (mrdeploy's dispatch calling the per-profile models) on the real server."""
    repo = write_repository(pnet_bundle, tmp_path / "repo")
    with pytest.raises(BackendUnavailable, match=r"needs Triton's 'onnxruntime' backend.*--embedded"):
        TritonServer(repo.path).start()
    _python_profile_models(repo)
    server = _serve(request, repo.path)
    rows = check_served(server, repo)
    assert {r.profile for r in rows} == {"small", "mid", "s128"}
    assert max(r.max_abs_err for r in rows) <= 1e-5
