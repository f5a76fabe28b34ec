"""Task heads (PAPERS.md 2.1), run at full input resolution on the upsampled neck map.

- segmentation: conv3x3 unit (no bias, with BN) -> ReLU -> full-precision 1x1 -> logits ``(B, K, H, W)``.
- depth: conv3x3 unit -> ReLU -> full-precision 1x1 -> sigmoid, times ``max_depth`` -> ``(B, 1, H, W)``.
  In the standard fp32 layout the depth conv has a bias and no BN (PAPERS.md 2.2).

The final 1x1 is a :class:`PredictionConv`: always full precision; the complexity "paper rule" counts its
weight as binary in binary models (PAPERS.md 3).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bindense.models.spec import MethodSpec

TASKS = ("seg", "depth")


class PredictionConv(nn.Conv2d):
    """Full-precision final 1x1 prediction conv (with bias)."""

    paper_rule_binary = True  # PAPERS.md 3: the paper's count treats this weight as binary

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1, bias=True)


class SegHead(nn.Module):
    """Segmentation head: ``conv3x3 -> ReLU -> PredictionConv`` (logits)."""

    def __init__(self, spec: MethodSpec, in_channels: int, num_classes: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_channels
        self.conv = spec.conv(in_channels, hidden, 3, padding=1, bias=False)
        self.act = nn.ReLU()
        self.classifier = PredictionConv(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.act(self.conv(x)))


class DepthHead(nn.Module):
    """Depth head: ``conv3x3 -> ReLU -> PredictionConv(1) -> sigmoid * max_depth`` (metres)."""

    def __init__(self, spec: MethodSpec, in_channels: int, max_depth: float, hidden: int = 32) -> None:
        super().__init__()
        plain = not spec.fpn_norm
        self.conv = spec.conv(in_channels, hidden, 3, padding=1, bias=plain, norm=not plain)
        self.act = nn.ReLU()
        self.predictor = PredictionConv(hidden, 1)
        self.max_depth = float(max_depth)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.predictor(self.act(self.conv(x)))) * self.max_depth

    def extra_repr(self) -> str:
        return f"max_depth={self.max_depth}"
