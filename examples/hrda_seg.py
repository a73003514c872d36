"""An HRDA-style multi-resolution segmentation net, plain torch.

One small encoder-decoder is shared by two branches: a context branch on the image resized to 0.5x
and a detail branch at full resolution. The context branch also predicts a scale-attention map
(sigmoid); the context logits and attention are upsampled to the detail logits' grid and fused as
``att * detail + (1 - att) * context``; the result is upsampled to the input's H x W. Every resize
takes its size from a tensor shape, so the graph stays dynamic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # imported as part of the examples package (python -m examples.train, from examples.x import ...)
    from examples._conv_blocks import conv_bn_relu, seeded_eval
except ImportError:  # loaded by file path: mrdeploy puts this file's folder on sys.path (see _conv_blocks)
    from _conv_blocks import conv_bn_relu, seeded_eval
from torch import nn


class SegNet(nn.Module):
    """Encoder to 1/8, decoder back to 1/4 with a skip: returns (logits, features) at 1/4."""

    def __init__(self, num_classes: int, in_chans: int = 3, widths=(16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(conv_bn_relu(in_chans, w1, stride=2), conv_bn_relu(w1, w1))  # 1/2
        self.down4 = nn.Sequential(conv_bn_relu(w1, w2, stride=2), conv_bn_relu(w2, w2))  # 1/4
        self.down8 = nn.Sequential(conv_bn_relu(w2, w3, stride=2), conv_bn_relu(w3, w3))  # 1/8
        self.decode = conv_bn_relu(w2 + w3, w2)
        self.cls = nn.Conv2d(w2, num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f4 = self.down4(self.stem(x))
        f8 = self.down8(f4)
        up = F.interpolate(f8, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        feat = self.decode(torch.cat([f4, up], dim=1))
        return self.cls(feat), feat


class HRDASeg(nn.Module):
    def __init__(self, num_classes: int = 4, in_chans: int = 3, widths=(16, 32, 64), context_scale: float = 0.5):
        super().__init__()
        if context_scale <= 0 or abs(1 / context_scale - round(1 / context_scale)) > 1e-9:
            raise ValueError(f"context_scale must be 1/k for an integer k, got {context_scale}")
        self.context_factor = round(1 / context_scale)
        self.net = SegNet(num_classes, in_chans, widths)
        self.scale_attention = nn.Sequential(conv_bn_relu(widths[1], widths[1]), nn.Conv2d(widths[1], 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # integer arithmetic on the input's shape keeps the size symbolic in the exported graph
        # (int(h * 0.5) gets specialized to a constant; scale_factor reaches ONNX as a double input)
        size = (x.shape[-2] // self.context_factor, x.shape[-1] // self.context_factor)
        ctx_in = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        ctx_logits, ctx_feat = self.net(ctx_in)
        att = torch.sigmoid(self.scale_attention(ctx_feat))
        det_logits, _ = self.net(x)
        size = det_logits.shape[-2:]
        ctx_logits = F.interpolate(ctx_logits, size=size, mode="bilinear", align_corners=False)
        att = F.interpolate(att, size=size, mode="bilinear", align_corners=False)
        fused = att * det_logits + (1 - att) * ctx_logits
        return F.interpolate(fused, size=x.shape[-2:], mode="bilinear", align_corners=False)


def hrda_seg(num_classes: int = 4, seed: int | None = 0, **kwargs) -> HRDASeg:
    """The example segmentation net in eval mode; output N x classes x H x W."""
    return seeded_eval(HRDASeg, seed, num_classes=num_classes, **kwargs)
