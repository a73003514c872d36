"""Test bundles made without the builder: tiny ONNX conv nets (onnx.helper) with dynamic batch/H/W,
copied as each profile's artifact, and a manifest written through mrdeploy.runtime.manifest.

Models (seeded random weights):
- ``cls``: input [N,3,H,W] -> conv3x3 -> relu -> global average pool -> gemm -> ``logits`` [N,5]
- ``seg``: input [N,3,H,W] -> conv3x3 -> relu -> ``mask_logits`` [N,4,H,W] (1x1 conv, stride 1),
  ``coarse`` [N,4,ceil(H/2),ceil(W/2)] (3x3 conv stride 2, spatial, stride 2), ``pooled`` [N,4]
- ``two``: inputs ``template`` [N,3,h,w] and ``search`` [N,3,H,W] -> ``score`` [N,4] and
  ``response`` [N,1,H,W] (spatial, follows ``search``)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mrdeploy._atomic import atomic_dir
from mrdeploy.runtime.manifest import Manifest, ProfileEntry, sha256_file
from mrdeploy.runtime.modelinfo import InputInfo, ModelInfo, OutputInfo
from mrdeploy.runtime.profiles import make_profile, parse_batch, parse_profile

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LABELS = ["airplane", "bird", "cat", "dog", "frog"]


def _init(rng, name, shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _conv(name, x, w, b, out, stride=1, pad=1):
    return helper.make_node("Conv", [x, w, b], [out], name=name, strides=[stride, stride], pads=[pad] * 4)


def _image_input(name, c=3, dims=("batch", "height", "width")):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [dims[0], c, dims[1], dims[2]])


def model_info(kind: str, divisor: int = 1) -> ModelInfo:
    if kind == "cls":
        return ModelInfo(
            name="tiny-cls", task="classification",
            inputs=[InputInfo("input", 3, divisor=divisor, min_size=(16, 16), max_size=(512, 512), mean=MEAN, std=STD)],
            outputs=[OutputInfo("logits")], labels=list(LABELS),
        )
    if kind == "seg":
        return ModelInfo(
            name="tiny-seg", task="segmentation",
            inputs=[InputInfo("input", 3, divisor=divisor, min_size=(16, 16), max_size=(512, 512), mean=MEAN, std=STD)],
            outputs=[OutputInfo("mask_logits", True, 1), OutputInfo("coarse", True, 2), OutputInfo("pooled")],
            labels=["background", "disk", "square", "triangle"],
        )
    if kind == "two":
        return ModelInfo(
            name="tiny-two", task="dense",
            inputs=[InputInfo("template", 3, divisor=divisor), InputInfo("search", 3, divisor=divisor)],
            outputs=[OutputInfo("score"), OutputInfo("response", True, 1)],
        )
    raise ValueError(kind)


def make_model(path: str | Path, kind: str = "cls", seed: int = 0, divisor: int = 1) -> Path:
    """Write a tiny ONNX model with dynamic batch/height/width and mrdeploy metadata."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    if kind == "cls":
        inits += [_init(rng, "w1", (8, 3, 3, 3)), _init(rng, "b1", (8,), 0.1),
                  _init(rng, "wg", (8, 5), 1.0), _init(rng, "bg", (5,), 0.1)]
        nodes += [
            _conv("conv1", "input", "w1", "b1", "c1"),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("GlobalAveragePool", ["r1"], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "wg", "bg"], ["logits"]),
        ]
        inputs = [_image_input("input")]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])]
    elif kind == "seg":
        inits += [_init(rng, "w1", (8, 3, 3, 3)), _init(rng, "b1", (8,), 0.1),
                  _init(rng, "w2", (4, 8, 1, 1)), _init(rng, "b2", (4,), 0.1),
                  _init(rng, "w3", (4, 8, 3, 3)), _init(rng, "b3", (4,), 0.1)]
        nodes += [
            _conv("conv1", "input", "w1", "b1", "c1"),
            helper.make_node("Relu", ["c1"], ["r1"]),
            _conv("head", "r1", "w2", "b2", "mask_logits", pad=0),
            _conv("coarse_head", "r1", "w3", "b3", "coarse", stride=2, pad=1),
            helper.make_node("GlobalAveragePool", ["mask_logits"], ["gp"]),
            helper.make_node("Flatten", ["gp"], ["pooled"], axis=1),
        ]
        inputs = [_image_input("input")]
        outputs = [
            helper.make_tensor_value_info("mask_logits", TensorProto.FLOAT, ["batch", 4, "height", "width"]),
            helper.make_tensor_value_info("coarse", TensorProto.FLOAT, ["batch", 4, "ch", "cw"]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 4]),
        ]
    elif kind == "two":
        inits += [_init(rng, "wt", (4, 3, 3, 3)), _init(rng, "bt", (4,), 0.1),
                  _init(rng, "ws", (4, 3, 3, 3)), _init(rng, "bs", (4,), 0.1),
                  _init(rng, "wr", (1, 4, 1, 1)), _init(rng, "br", (1,), 0.1)]
        nodes += [
            _conv("tconv", "template", "wt", "bt", "t1"),
            _conv("sconv", "search", "ws", "bs", "s1"),
            helper.make_node("GlobalAveragePool", ["t1"], ["tg"]),
            helper.make_node("GlobalAveragePool", ["s1"], ["sg"]),
            helper.make_node("Add", ["tg", "sg"], ["sum"]),
            helper.make_node("Flatten", ["sum"], ["score"], axis=1),
            helper.make_node("Mul", ["s1", "tg"], ["corr"]),
            _conv("resp", "corr", "wr", "br", "response", pad=0),
        ]
        inputs = [_image_input("template", dims=("batch", "th", "tw")), _image_input("search", dims=("batch", "sh", "sw"))]
        outputs = [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("response", TensorProto.FLOAT, ["batch", 1, "sh", "sw"]),
        ]
    else:
        raise ValueError(kind)
    graph = helper.make_graph(nodes, f"tiny_{kind}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests.bundles")
    model.ir_version = 8
    helper.set_model_props(model, model_info(kind, divisor).to_metadata_props())
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_bundle(
    out: str | Path,
    kind: str = "cls",
    profiles: list[str] = ("small=32-64@48", "large=96-160@128", "s224=224"),
    policy: str = "pad",
    divisor: int = 1,
    batch: str | None = None,
    options: dict | None = None,
    model: str | Path | None = None,
    info: ModelInfo | None = None,
    seed: int = 0,
) -> Path:
    """A bundle of ``kind`` (or of the given ONNX ``model`` with ``info``) whose every profile's artifact
    is the dynamic model itself. Written atomically; returns ``out``."""
    info = info or model_info(kind, divisor)
    channels = {i.name: i.channels for i in info.inputs}
    divisors = {i.name: i.divisor for i in info.inputs}
    out = Path(out)
    with atomic_dir(out, "bundle") as tmp:
        src = tmp / "model.onnx"
        if model is None:
            make_model(src, kind, seed=seed, divisor=divisor)
        else:
            shutil.copyfile(model, src)
        (tmp / "profiles").mkdir()
        entries = []
        for i, text in enumerate(profiles):
            prof = make_profile(parse_profile(text), channels, parse_batch(batch), divisors, index=i)
            art = f"profiles/{prof.name}.onnx"
            shutil.copyfile(src, tmp / art)
            entries.append(ProfileEntry(prof, "onnxruntime", "fp32", art, sha256_file(tmp / art),
                                        options=dict(options or {"intra_op_num_threads": 1})))
        Manifest(
            model=info,
            source={"artifact": "model.onnx", "sha256": sha256_file(src)},
            policy=policy,
            profiles=entries,
            build={"mrdeploy": "0.1.0", "onnx": onnx.__version__, "onnxruntime": None, "tensorrt": None,
                   "gpu": None, "compute_capability": None, "created": "2026-01-01T00:00:00+00:00"},
        ).write(tmp)
    return out


def ort_run(model: str | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model run directly with a bare ONNX Runtime session (the reference)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))
