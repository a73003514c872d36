"""Small models written as papers' code writes them, for the export / crop-back fixes (issue 11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        y = self.n1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.n2(x))


class StandardViT(nn.Module):
    """A standard ViT: nn.MultiheadAttention blocks, a learned 14x14 position grid resized (bicubic) to
    the token grid, a class token."""

    def __init__(self, dim: int = 32, patch: int = 8, grid: int = 14, num_classes: int = 5):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, dim, grid, grid) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(Block(dim, 4), Block(dim, 4))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.embed(x)
        b, _, h, w = x.shape
        x = x + F.interpolate(self.pos, size=(h, w), mode="bicubic", align_corners=False)
        x = torch.cat([self.cls.expand(b, -1, -1), x.flatten(2).transpose(1, 2)], 1)
        return self.head(self.norm(self.blocks(x))[:, 0])


def standard_vit():
    torch.manual_seed(0)
    return StandardViT().eval()


class Heads(nn.Module):
    """Spatial heads of different kinds on one input: a stride-16 patch head (floors), a stride-4
    kernel=stride head (floors), a "same"-padded stride-2 conv (rounds up) and a 2x PixelShuffle."""

    def __init__(self):
        super().__init__()
        self.p16 = nn.Conv2d(3, 2, 16, 16)
        self.p4 = nn.Conv2d(3, 2, 4, 4)
        self.s2 = nn.Conv2d(3, 2, 3, 2, 1)
        self.up = nn.Sequential(nn.Conv2d(3, 12, 3, 1, 1), nn.PixelShuffle(2))

    def forward(self, x):
        return self.p16(x), self.p4(x), self.s2(x), self.up(x)
