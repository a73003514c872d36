""""Ensemble everything everywhere"-style classifier (Fort & Lakshminarayanan, 2024): an input
pyramid stacked inside the graph (each level downsampled with antialiasing and brought back to the
full size), a CNN backbone with a linear head on every stage, and CrossMax aggregation of the heads.

Antialiased downsampling is exact in ONNX Runtime only where the size divides evenly by the pyramid
factors; the export sweep finds that grid (16 here) and records it as the divisor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def crossmax(logits: torch.Tensor, k: int = 2) -> torch.Tensor:
    """CrossMax over predictors (dim 0): subtract each predictor's max, then each class's max over
    predictors, then take the k-th highest value per class."""
    z = logits - logits.max(dim=-1, keepdim=True).values
    z = z - z.max(dim=0, keepdim=True).values
    return torch.topk(z, k, dim=0).values[-1]


class PyramidEnsemble(nn.Module):
    def __init__(self, num_classes: int = 10, widths=(16, 32, 48), factors=(2, 4)):
        super().__init__()
        self.factors = factors
        cin = 3 * (1 + len(factors))
        stages = []
        for i, wd in enumerate(widths):
            stages.append(nn.Sequential(
                nn.Conv2d(cin, wd, 3, stride=1 if i == 0 else 2, padding=1), nn.BatchNorm2d(wd), nn.ReLU(inplace=True)
            ))
            cin = wd
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(nn.Linear(wd, num_classes) for wd in widths)

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        levels = [x]
        for f in self.factors:
            small = F.interpolate(x, scale_factor=1 / f, mode="bilinear", antialias=True, align_corners=False)
            levels.append(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False))
        return torch.cat(levels, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pyramid(x)
        outs = []
        for stage, head in zip(self.stages, self.heads):
            y = stage(y)
            outs.append(head(y.mean(dim=(2, 3))))
        return crossmax(torch.stack(outs))


def crossmax_ensemble(seed: int = 0, **kwargs) -> PyramidEnsemble:
    torch.manual_seed(seed)
    model = PyramidEnsemble(**kwargs)
    for m in model.modules():  # non-trivial BN statistics, as a trained model has
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()
