"""NaViT-style native-resolution ViT (Dehghani et al., 2023): patchify without resizing, factorized
row/column position embeddings indexed by ids computed from the shape, attention pooling.

The row/column ids are built with ``repeat_interleave`` / ``repeat`` as in the reference code; the
dynamo exporter's graph for them fails at run time in ONNX Runtime (an invalid Expand), so
``mrdeploy export`` falls back to TorchScript, whose graph passes the sweep.
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5).softmax(-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class NaViT(nn.Module):
    def __init__(self, num_classes: int = 10, dim: int = 32, patch: int = 8, max_grid: int = 64, heads: int = 4):
        super().__init__()
        self.patch = patch
        self.to_tokens = nn.Sequential(nn.LayerNorm(3 * patch * patch), nn.Linear(3 * patch * patch, dim))
        self.pos_h = nn.Parameter(torch.randn(max_grid, dim) * 0.02)
        self.pos_w = nn.Parameter(torch.randn(max_grid, dim) * 0.02)
        self.blocks = nn.Sequential(Block(dim, heads), Block(dim, heads))
        self.query = nn.Parameter(torch.randn(1, 1, dim))
        self.pool_kv = nn.Linear(dim, 2 * dim)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        p = self.patch
        h, w = hh // p, ww // p
        x = x.reshape(b, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, c * p * p)
        rows = torch.arange(h, device=x.device).repeat_interleave(w)
        cols = torch.arange(w, device=x.device).repeat(h)
        x = self.to_tokens(x) + self.pos_h[rows] + self.pos_w[cols]
        x = self.blocks(x)
        k, v = self.pool_kv(x).chunk(2, dim=-1)  # attention pooling: one learned query
        attn = (self.query @ k.transpose(1, 2) * k.shape[-1] ** -0.5).softmax(-1)
        return self.head((attn @ v)[:, 0])


def navit(seed: int = 0, **kwargs) -> NaViT:
    torch.manual_seed(seed)
    return NaViT(**kwargs).eval()
