"""mrdeploy's front model for Triton's Python backend: clients send any served size, this model runs
mrdeploy's own dispatch (profile choice, pad/resize, crop back of spatial outputs).

``mrdeploy triton`` copies this file into the repository as ``<model>/1/model.py``, beside
``mrdeploy_front.json`` (what to serve) and ``bundle/`` (the manifest; in embedded mode the engines too).

- mode ``bls``: each profile is its own Triton model (onnxruntime_onnx / tensorrt_plan, with Triton's
  dynamic batching); this model calls it through Business Logic Scripting (``pb_utils.InferenceRequest``).
- mode ``embedded``: this model loads the bundle with ``mrdeploy.runtime`` and runs it itself, for
  Triton builds without an ONNX Runtime backend.

The Python that runs the backend stub must import numpy and ``mrdeploy.runtime`` with its backend
(``pip install 'mrdeploy[runtime]'`` there); ``mrdeploy triton --serve`` arranges that for its own venv.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = Path(__file__).resolve().parent
SPEC = "mrdeploy_front.json"


# Tensors cross the stub by DLPack, both ways: the stub of the nvidia-pytriton wheel was built against
# numpy 1.x, and with numpy 2 its ``as_numpy()`` returns zeros and ``Tensor(name, array)`` sends no data.
class _Capsule:
    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0


def to_numpy(tensor) -> np.ndarray:
    """A pb_utils.Tensor (on CPU) as a numpy array."""
    return np.from_dlpack(_Capsule(tensor.to_dlpack()))


def to_tensor(name: str, array: np.ndarray):
    """A numpy array as a pb_utils.Tensor (a read-only array, e.g. a request's input, is copied: the
    DLPack version the stub speaks cannot mark an export read-only)."""
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return pb_utils.Tensor.from_dlpack(name, array)


def bls_runner(bundle: Path, spec: dict):
    """A Runner whose engines are the per-profile Triton models, called through BLS."""
    from mrdeploy.errors import MrdeployError
    from mrdeploy.runtime import Manifest
    from mrdeploy.runtime.backends.base import Engine
    from mrdeploy.runtime.runner import Runner

    class BlsEngine(Engine):
        backend = "triton-bls"

        def __init__(self, entry, model_name: str):
            self.entry, self.path, self.build = entry, bundle, {}
            self.model_name = model_name
            self.input_names = list(entry.profile.inputs)
            self.output_names = list(spec["outputs"])
            self.input_dtypes = {n: np.dtype(t) for n, t in spec["input_dtypes"][entry.name].items()}

        def run(self, feeds):
            request = pb_utils.InferenceRequest(
                model_name=self.model_name,
                requested_output_names=self.output_names,
                inputs=[to_tensor(n, a) for n, a in feeds.items()],
            )
            response = request.exec()
            if response.has_error():
                raise MrdeployError(f"Triton model {self.model_name!r}: {response.error().message()}")
            return {n: to_numpy(pb_utils.get_output_tensor_by_name(response, n)) for n in self.output_names}

    class BlsRunner(Runner):
        def _create(self, name):
            return BlsEngine(self._by_name[name], spec["models"][name])

    return BlsRunner(bundle, Manifest.read(bundle), verify=False)


class TritonPythonModel:
    def initialize(self, args):
        spec = json.loads((HERE / SPEC).read_text())
        self.inputs, self.outputs = spec["inputs"], spec["outputs"]
        if spec["mode"] == "embedded":
            import mrdeploy.runtime as rt

            self.runner = rt.load(HERE / "bundle", threads=spec.get("threads"))
        else:
            self.runner = bls_runner(HERE / "bundle", spec)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feeds = {n: to_numpy(pb_utils.get_input_tensor_by_name(request, n)) for n in self.inputs}
                outs = self.runner.run(feeds)
                tensors = [to_tensor(n, outs[n]) for n in self.outputs]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as e:  # the caller gets mrdeploy's message, the model keeps serving
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"mrdeploy: {e}")))
        return responses

    def finalize(self):
        self.runner.close()
