"""A ResFormer-style ViT with global-local positional embedding (GLPE), plain torch.

The global position embedding is learned on a base grid and resampled (bicubic) to the token grid of
the actual input, square or not; the local term is a depthwise 3x3 conv over the token grid. The
resample size is taken from the tensor's shape, so the exported ONNX graph stays dynamic in H and W.

Patch size 8 (not 16): the example data are small digit images (32-128 px), where 16-pixel patches
would leave only 2x2 to 8x8 tokens; with 8-pixel patches a 256 px input already gives 1024 tokens and
512 px gives 4096, which is where attention softmax gets hard for INT8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with an explicit softmax (an ONNX ``Softmax`` node, not SDPA)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))  # N, L, 3, h, d
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each N, h, L, d
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).flatten(2)  # N, L, h*d
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GlobalLocalPosEmbed(nn.Module):
    """Global embedding (base grid, resampled to the token grid) plus a depthwise-conv local term."""

    def __init__(self, dim: int, base_grid: int, mode: str = "bicubic"):
        super().__init__()
        self.mode = mode
        self.global_embed = nn.Parameter(torch.randn(1, dim, base_grid, base_grid) * 0.02)
        self.local = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: tokens as a grid, N x D x gh x gw (gh != gw allowed)."""
        pos = F.interpolate(self.global_embed, size=x.shape[-2:], mode=self.mode, align_corners=False)
        return x + pos + self.local(x)


class ResFormer(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        patch_size: int = 8,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        base_grid: int = 8,
        pos_mode: str = "bicubic",
    ):
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.pos = GlobalLocalPosEmbed(embed_dim, base_grid, pos_mode)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos(self.patch_embed(x))  # N, D, H/p, W/p
        tokens = x.flatten(2).transpose(1, 2)  # N, L, D
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens[:, 0]))


def resformer_tiny(num_classes: int = 10, seed: int | None = 0, **kwargs) -> ResFormer:
    """ResFormer-tiny: patch 8, dim 64, 4 blocks of 4 heads; ``seed`` makes the init deterministic."""
    if seed is not None:
        torch.manual_seed(seed)
    return ResFormer(num_classes=num_classes, **kwargs).eval()
