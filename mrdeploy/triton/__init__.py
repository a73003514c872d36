"""Scale out with NVIDIA Triton Inference Server: a model repository for a bundle, and a real server.

    import mrdeploy
    repo = mrdeploy.triton("bundle/", "repo/", embedded=True)     # = mrdeploy.triton.write_repository
    with mrdeploy.triton.TritonServer("repo/") as server:          # tritonserver on 127.0.0.1
        print(server.http_url, server.grpc_url)

``mrdeploy.triton`` is this module and is callable: calling it writes a repository.
"""

from __future__ import annotations

import sys
import types

from mrdeploy.triton.repository import Repository, read_repository, write_repository
from mrdeploy.triton.server import TritonServer, find_tritonserver, free_port, port_in_use

__all__ = [
    "Repository",
    "TritonServer",
    "find_tritonserver",
    "free_port",
    "port_in_use",
    "read_repository",
    "write_repository",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> Repository:
        return write_repository(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
