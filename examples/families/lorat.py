"""LoRAT-style one-stream tracker (Lin et al., 2024): template and search region at their own
resolutions through one shared patch embedding, token-type embeddings, position embeddings resized to
each token grid, one transformer over both token sets, and a dense head on the search tokens at the
patch stride (16): a score map and a box map, each floor(search / 16) on a side."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.n1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.n2(x))


class OneStreamTracker(nn.Module):
    def __init__(self, dim: int = 32, patch: int = 16, grid: int = 8, heads: int = 4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)  # shared by template and search
        self.pos = nn.Parameter(torch.randn(1, dim, grid, grid) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(2, dim) * 0.02)  # 0: template, 1: search
        self.blocks = nn.Sequential(Block(dim, heads), Block(dim, heads))
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, 1, 1))
        self.box = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, 4, 1))

    def tokens(self, x: torch.Tensor, kind: int) -> tuple[torch.Tensor, int, int]:
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = x + F.interpolate(self.pos, size=(h, w), mode="bicubic", align_corners=False)
        return x.flatten(2).transpose(1, 2) + self.type_embed[kind], h, w

    def forward(self, template: torch.Tensor, search: torch.Tensor):
        z, _, _ = self.tokens(template, 0)
        s, h, w = self.tokens(search, 1)
        x = self.norm(self.blocks(torch.cat([z, s], dim=1)))
        s = x[:, z.shape[1]:].transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return self.score(s), self.box(s).sigmoid()


def lorat_tracker(seed: int = 0, **kwargs) -> OneStreamTracker:
    torch.manual_seed(seed)
    return OneStreamTracker(**kwargs).eval()
