"""Send requests of several sizes to a served repository over HTTP and gRPC, compare with the Runner."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrdeploy.errors import BundleError, InputError, MrdeployError
from mrdeploy.triton.repository import MARKER, Repository


@dataclass(frozen=True)
class CheckRow:
    protocol: str  # "http" | "grpc"
    size: str  # "HxW" of the first input
    profile: str  # the profile the Runner chose
    max_abs_err: float  # over every output


def reference_bundle(repo: Repository) -> Path:
    """The bundle to compare with: the embedded copy, else the one the repository was written from."""
    if repo.embedded:
        return repo.path / repo.front / "1" / "bundle"
    bundle = Path(json.loads((repo.path / MARKER).read_text())["bundle"])
    if not (bundle / "manifest.json").is_file():
        raise BundleError(f"{bundle}, the bundle {repo.path} was written from, is gone: nothing to compare with")
    return bundle


def check_sizes(runner) -> list[dict[str, tuple]]:
    """Every profile's min/opt/max (batch 1) and one size off each opt: feeds shapes per input."""
    out, seen = [], set()
    for p in runner.profiles:
        for which in ("min", "opt", "max", "off"):
            shapes = {}
            for n, r in p.inputs.items():
                s = r.opt if which == "off" else getattr(r, which)
                h, w = (max(1, s[2] - 1), max(1, s[3] - 3)) if which == "off" else (s[2], s[3])
                shapes[n] = (1, s[1], h, w)
            key = tuple(shapes.items())
            if key not in seen:
                seen.add(key)
                out.append(shapes)
    return out


def _infer(module, client, model: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    inputs = []
    for n, a in feeds.items():
        i = module.InferInput(n, list(a.shape), "FP32")
        i.set_data_from_numpy(a)
        inputs.append(i)
    result = client.infer(model, inputs, outputs=[module.InferRequestedOutput(n) for n in outputs])
    return {n: result.as_numpy(n) for n in outputs}


def check_served(server, repo: Repository, sizes: list[dict[str, tuple]] | None = None, seed: int = 0) -> list[CheckRow]:
    """Each size through the served front model (HTTP and gRPC) and through the Runner; the rows."""
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    import mrdeploy.runtime as rt

    rng = np.random.default_rng(seed)
    rows = []
    with rt.load(reference_bundle(repo)) as runner:
        clients = {"http": (thttp, thttp.InferenceServerClient(server.http_url)),
                   "grpc": (tgrpc, tgrpc.InferenceServerClient(server.grpc_url))}
        try:
            for shapes in sizes or check_sizes(runner):
                feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
                try:
                    ref, info = runner.run_with_info(feeds)
                except InputError:
                    continue  # not servable under the bundle's policy: nothing to compare
                for protocol, (module, client) in clients.items():
                    got = _infer(module, client, repo.front, feeds, list(ref))
                    err = 0.0
                    for n, y in ref.items():
                        if got[n].shape != y.shape:
                            raise MrdeployError(
                                f"{protocol}: output {n!r} of a {shapes} request has shape {got[n].shape}, "
                                f"the Runner's has {y.shape}"
                            )
                        err = max(err, float(np.max(np.abs(got[n].astype(np.float64) - y))) if y.size else 0.0)
                    first = next(iter(shapes.values()))
                    rows.append(CheckRow(protocol, f"{first[2]}x{first[3]}", info.decision.profile.name, err))
        finally:
            for _, client in clients.values():
                client.close()
    if not rows:
        raise MrdeployError("no size could be checked")
    return rows
