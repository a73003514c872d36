"""Building blocks shared by the plain-torch examples (two_stream_cnn, hrda_seg, tracker).

The examples are imported as ``examples.<name>`` (training, tests) or loaded by file path
(``examples/tracker.py:siamese_tracker``, where mrdeploy puts the file's directory on ``sys.path`` while
it loads): each tries ``examples._conv_blocks`` first, then ``_conv_blocks``.
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


def randomize_bn(model: nn.Module) -> None:
    """Give BN non-trivial statistics so an untrained export still exercises BN folding."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)


def seeded_eval(cls: type[nn.Module], seed: int | None, **kwargs) -> nn.Module:
    """``cls(**kwargs)`` in eval mode, its init deterministic with ``seed`` and its BN statistics
    non-trivial (see :func:`randomize_bn`): what every example factory returns."""
    if seed is not None:
        torch.manual_seed(seed)
    model = cls(**kwargs)
    with torch.no_grad():
        randomize_bn(model)
    return model.eval()
