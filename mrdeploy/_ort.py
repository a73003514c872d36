"""The one factory for the ONNX Runtime CPU sessions that check, calibrate and compare models.

Serving sessions are the onnxruntime backend's (``mrdeploy.runtime.backends.onnxruntime``); every
other session (the export sweep, the specialized-model check, calibration and its accuracy budget,
parity/bench references, Triton repository checks) comes from :func:`cpu_session`, so they share the
same options: errors only in the log, ``threads`` intra-op threads and one inter-op thread.
"""

from __future__ import annotations

from collections.abc import Mapping

SPIN_OFF = {"session.intra_op.allow_spinning": "0"}


def cpu_session(model_or_path, threads: int | None = None, *, config: Mapping[str, str] | None = None,
                spin: bool = True):
    """An ``onnxruntime.InferenceSession`` on the CPU provider for a ModelProto or a path.

    ``threads``: intra-op threads (None or 0: ONNX Runtime's default); ``config``: session config
    entries; ``spin=False``: no busy-waiting after a call (another model timed next gets the cores)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    for key, value in {**(config or {}), **({} if spin else SPIN_OFF)}.items():
        so.add_session_config_entry(key, value)
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
