"""The runtime: bundle format, profile selection, backends, the Runner. numpy and a backend only.

    import mrdeploy.runtime as rt
    with rt.load("bundle/") as runner:
        logits = runner(x)                      # x: normalized NCHW float32
        print(runner.last_decision)             # which profile served it, and how
    with rt.Batcher(runner, max_batch=8) as b:  # concurrent callers of one profile and shape share a call
        y = b(x)

Nothing here imports torch or onnx; ONNX Runtime (or TensorRT) is imported when an engine first loads.
"""

from mrdeploy.runtime.batcher import Batcher
from mrdeploy.runtime.dispatch import Decision
from mrdeploy.runtime.manifest import FORMAT_VERSION, Manifest, ProfileEntry, verify_artifacts
from mrdeploy.runtime.profiles import Profile
from mrdeploy.runtime.runner import RunInfo, Runner, load

__all__ = [
    "Batcher",
    "FORMAT_VERSION",
    "Decision",
    "Manifest",
    "Profile",
    "ProfileEntry",
    "RunInfo",
    "Runner",
    "load",
    "verify_artifacts",
]
