"""Task losses used by the LightningModules (instantiated from ``conf/module/*.yaml``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def match_size(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize a (B, C, h, w) prediction to the target's spatial size when they differ."""
    if pred.shape[-2:] == target.shape[-2:]:
        return pred
    return F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)


class SegCrossEntropy(nn.Module):
    """Pixel-wise cross-entropy on logits (B, K, H, W) against labels (B, H, W); ``ignore_index`` skipped."""

    def __init__(self, ignore_index: int = 255, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 4:
            target = target[:, 0]
        target = target.long()
        logits = match_size(logits, target)
        if not (target != self.ignore_index).any():  # an all-ignored batch: zero loss, gradient kept defined
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing)


class SILogLoss(nn.Module):
    """Scale-invariant log loss (BTS): ``scale * sqrt(mean(d^2) - variance_focus * mean(d)^2)``.

    ``d = log(pred) - log(gt)`` over the pixels with ``gt > min_depth`` (and ``gt < max_depth`` when
    given), pooled over the batch. Predictions are clamped at ``eps`` before the log.
    """

    def __init__(
        self,
        variance_focus: float = 0.85,
        min_depth: float = 0.1,
        max_depth: float | None = None,
        scale: float = 10.0,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        if not 0.0 <= variance_focus <= 1.0:
            raise ValueError(f"variance_focus must be in [0, 1], got {variance_focus}")
        self.variance_focus = float(variance_focus)
        self.min_depth = float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        self.scale = float(scale)
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 3:
            target = target[:, None]
        pred = match_size(pred, target)
        valid = target > self.min_depth
        if self.max_depth is not None:
            valid &= target < self.max_depth
        if not valid.any():
            return pred.sum() * 0.0
        d = torch.log(pred[valid].clamp_min(self.eps)) - torch.log(target[valid])
        var = (d**2).mean() - self.variance_focus * d.mean() ** 2
        return self.scale * torch.sqrt(var.clamp_min(1e-12))
