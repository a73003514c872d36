"""Dense restoration U-Net (MIRNet / depth-estimation style: the output has the input's size, a
residual on the input) and a 2x super-resolution variant ending in PixelShuffle."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class UNet(nn.Module):
    def __init__(self, width: int = 16, scale: int = 1):
        super().__init__()
        self.scale = scale
        self.enc1, self.enc2 = conv(3, width), conv(width, 2 * width, 2)
        self.mid = conv(2 * width, 2 * width, 2)
        self.dec2 = conv(4 * width, 2 * width)
        self.dec1 = conv(3 * width, width)
        self.out = nn.Conv2d(width, 3 * scale * scale, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(scale) if scale > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        m = self.mid(e2)
        d2 = self.dec2(torch.cat([F.interpolate(m, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        y = self.shuffle(self.out(d1))
        base = x if self.scale == 1 else F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return base + y


def restoration_unet(seed: int = 0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    return UNet(scale=1, **kwargs).eval()


def super_resolution(seed: int = 0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    return UNet(scale=2, **kwargs).eval()
