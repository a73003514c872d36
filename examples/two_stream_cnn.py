"""A multi-resolution two-stream CNN (scene-recognition style), plain torch.

A coarse stream sees a 2x downsampled copy of the image, a fine stream the full resolution; both
reach 1/16 of the input, are aligned (the coarse map is resized to the fine map's shape, taken from the
tensor so the graph stays dynamic), concatenated, fused by a 1x1 conv, pooled globally and classified.
Conv/BN/ReLU throughout (BN folds into the convs), widths 32-64-128-256.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # imported as part of the examples package (python -m examples.train, from examples.x import ...)
    from examples._conv_blocks import conv_bn_relu, seeded_eval
except ImportError:  # loaded by file path: mrdeploy puts this file's folder on sys.path (see _conv_blocks)
    from _conv_blocks import conv_bn_relu, seeded_eval
from torch import nn


def stage(cin: int, cout: int) -> nn.Sequential:
    """Downsample by 2, then one more conv at that width."""
    return nn.Sequential(conv_bn_relu(cin, cout, stride=2), conv_bn_relu(cout, cout))


class TwoStreamCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths=(32, 64, 128, 256), coarse_widths=(32, 64, 128)):
        super().__init__()
        w = list(widths)
        cw = list(coarse_widths)
        # fine: stride 2 stem, then three stride-2 stages -> 1/16 of the input
        self.fine = nn.Sequential(
            conv_bn_relu(in_chans, w[0], stride=2), *[stage(a, b) for a, b in zip(w[:-1], w[1:])]
        )
        # coarse: on the 1/2 image, a stride 2 stem and two stride-2 stages -> 1/8 of that = 1/16
        self.coarse = nn.Sequential(
            conv_bn_relu(in_chans, cw[0], stride=2), *[stage(a, b) for a, b in zip(cw[:-1], cw[1:])]
        )
        self.fuse = conv_bn_relu(w[-1] + cw[-1], w[-1], k=1)
        self.head = nn.Linear(w[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = self.fine(x)
        coarse = self.coarse(F.avg_pool2d(x, 2))
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fuse(torch.cat([fine, coarse], dim=1))
        return self.head(y.mean(dim=(2, 3)))


def two_stream_cnn(num_classes: int = 10, seed: int | None = 0, **kwargs) -> TwoStreamCNN:
    """The example CNN in eval mode; ``seed`` makes the init deterministic."""
    return seeded_eval(TwoStreamCNN, seed, num_classes=num_classes, **kwargs)
