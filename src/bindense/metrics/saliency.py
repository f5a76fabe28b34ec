"""Salient object detection: max F-beta over thresholds and mean absolute error."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from bindense.metrics._common import check_same_shape, counts_at_or_above, default_thresholds, drop_channel_dim


class SaliencyMetrics(Metric):
    """``maxF`` (F-beta, beta^2 = 0.3 by default) over thresholds and ``mae``, pooled over all pixels.

    For each threshold t the binary prediction is ``prob >= t``; true positives, predicted positives
    and ground-truth positives are summed over every pixel of the split (pooled, not averaged per
    image), then F_beta(t) = (1 + b2) P R / (b2 P + R) and ``maxF`` is its maximum over t (the threshold
    is reported as ``maxF_threshold``). ``mae`` = mean |prob - gt| over all pixels, with the ground
    truth as given (a map in [0, 1]); the ground truth is foreground where gt > ``gt_threshold``.

    ``update(pred, gt)``: (B, H, W) or (B, 1, H, W); pred probabilities (logits with
    ``from_logits=True``). Pixels whose gt equals ``ignore_index`` (if given, e.g. 255) are left out of
    everything. The multi-task literature (ASTMT-derived meters) pools the same way with beta^2 = 0.3,
    thresholds 0.05 .. 0.95 (``thresholds=19``) and ignore label 255.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    tp: torch.Tensor
    pred_pos: torch.Tensor
    gt_pos: torch.Tensor
    abs_err: torch.Tensor
    num_pixels: torch.Tensor

    def __init__(
        self,
        thresholds: int | list[float] | torch.Tensor = 99,
        beta2: float = 0.3,
        from_logits: bool = False,
        gt_threshold: float = 0.5,
        ignore_index: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if beta2 <= 0:
            raise ValueError(f"beta2 must be > 0, got {beta2}")
        self.beta2 = float(beta2)
        self.from_logits = from_logits
        self.gt_threshold = float(gt_threshold)
        self.ignore_index = ignore_index
        self.register_buffer("thresholds", default_thresholds(thresholds), persistent=False)
        t = self.thresholds.numel()
        self.add_state("tp", torch.zeros(t, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("pred_pos", torch.zeros(t, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("gt_pos", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("abs_err", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_pixels", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        pred = drop_channel_dim(pred, "pred").float()
        gt = drop_channel_dim(gt, "gt").float()
        check_same_shape(pred, gt, "SaliencyMetrics pred/gt")
        if self.from_logits:
            pred = pred.sigmoid()
        if self.ignore_index is not None:
            counted = gt != self.ignore_index
            pred, gt = pred[counted], gt[counted]
        fg = gt > self.gt_threshold
        self.pred_pos += counts_at_or_above(pred, self.thresholds)
        self.tp += counts_at_or_above(pred[fg], self.thresholds)
        self.gt_pos += fg.sum()
        self.abs_err += (pred.double() - gt.double()).abs().sum()
        self.num_pixels += pred.numel()

    def pr_curve(self) -> dict[str, torch.Tensor]:
        """Thresholds with the pooled precision, recall and F-beta at each."""
        precision = self.tp.double() / self.pred_pos.clamp(min=1)
        recall = self.tp.double() / self.gt_pos.clamp(min=1)
        f = (1 + self.beta2) * precision * recall / (self.beta2 * precision + recall).clamp(min=1e-12)
        return {"thresholds": self.thresholds, "precision": precision, "recall": recall, "f": f}

    def compute(self) -> dict[str, torch.Tensor]:
        f = self.pr_curve()["f"]
        best = int(torch.argmax(f))
        return {
            "maxF": f[best].float(),
            "maxF_threshold": self.thresholds[best].float(),
            "mae": (self.abs_err / self.num_pixels.clamp(min=1)).float(),
        }
