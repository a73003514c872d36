"""A small Siamese tracker with two inputs of different sizes, plain torch.

``template`` (e.g. 112-128 px) and ``search`` (e.g. 224-384 px) go through one shared CNN backbone
(stride 8). The centre k x k of the template features is the correlation kernel; a depthwise
cross-correlation (written as k*k shifted multiply-adds with static slice offsets, so neither a
dynamic ``groups`` nor a dynamic kernel shape enters the graph) gives per-channel responses that a
1x1 head turns into one score map, N x 1 x (Hs/8 - k + 1) x (Ws/8 - k + 1).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _randomize_bn(model: nn.Module) -> None:
    """Give BN non-trivial statistics so an untrained export still exercises BN folding."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)


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
        k = self.kernel
        out = None
        for i in range(k):
            for j in range(k):
                # rows i .. H-(k-1-i): negative static ends keep the slice dynamic in H
                end_i = i - k + 1 if i < k - 1 else None
                end_j = j - k + 1 if j < k - 1 else None
                term = search[:, :, i:end_i, j:end_j] * kernel[:, :, i : i + 1, j : j + 1]
                out = term if out is None else out + term
        return out

    def forward(self, template: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        z = self._center(self.backbone(template))
        x = self.backbone(search)
        return self.head(self.xcorr_depthwise(x, z))


def siamese_tracker(seed: int | None = 0, **kwargs) -> SiameseTracker:
    """The example tracker in eval mode: inputs (template, search), output the response map."""
    if seed is not None:
        torch.manual_seed(seed)
    model = SiameseTracker(**kwargs)
    with torch.no_grad():
        _randomize_bn(model)
    return model.eval()
