"""A small Siamese tracker with two inputs of different sizes, plain torch.

``template`` (e.g. 112-128 px) and ``search`` (e.g. 224-384 px) go through one shared CNN backbone
(stride 8). The centre k x k of the template features is the correlation kernel; a depthwise
cross-correlation (im2col of the search features times the per-sample kernel, so neither a
dynamic ``groups`` nor a dynamic kernel shape enters the graph) gives per-channel responses that a
1x1 head turns into one score map, N x 1 x (Hs/8 - k + 1) x (Ws/8 - k + 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # imported as part of the examples package (python -m examples.train, from examples.x import ...)
    from examples._conv_blocks import conv_bn_relu, seeded_eval
except ImportError:  # loaded by file path: mrdeploy puts this file's folder on sys.path (see _conv_blocks)
    from _conv_blocks import conv_bn_relu, seeded_eval
from torch import nn


class SiameseTracker(nn.Module):
    def __init__(self, in_chans: int = 3, widths=(16, 32, 64), kernel: int = 7):
        super().__init__()
        w1, w2, w3 = widths
        self.kernel = kernel
        self.backbone = nn.Sequential(
            conv_bn_relu(in_chans, w1, stride=2),
            conv_bn_relu(w1, w2, stride=2),
            conv_bn_relu(w2, w2),
            conv_bn_relu(w2, w3, stride=2),
            conv_bn_relu(w3, w3),
        )
        self.head = nn.Sequential(conv_bn_relu(w3, w3, k=1), nn.Conv2d(w3, 1, 1))

    def _center(self, z: torch.Tensor) -> torch.Tensor:
        top = (z.shape[-2] - self.kernel) // 2
        left = (z.shape[-1] - self.kernel) // 2
        return z[:, :, top : top + self.kernel, left : left + self.kernel]

    def xcorr_depthwise(self, search: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """Per-channel correlation of ``search`` (N, C, H, W) with ``kernel`` (N, C, k, k)."""
        k = self.kernel
        n, c, h, w = search.shape
        cols = F.unfold(search, k)  # N, C*k*k, (H-k+1)*(W-k+1)
        cols = cols.unflatten(1, (c, k * k))  # N, C, k*k, L
        out = (cols * kernel.flatten(2).unsqueeze(-1)).sum(dim=2)  # N, C, L
        return out.unflatten(2, (h - k + 1, w - k + 1))

    def forward(self, template: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        z = self._center(self.backbone(template))
        x = self.backbone(search)
        return self.head(self.xcorr_depthwise(x, z))


def siamese_tracker(seed: int | None = 0, **kwargs) -> SiameseTracker:
    """The example tracker in eval mode: inputs (template, search), output the response map."""
    return seeded_eval(SiameseTracker, seed, **kwargs)
