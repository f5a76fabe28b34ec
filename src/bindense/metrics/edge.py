"""Edge detection: an approximation of the dataset-level optimal F-measure (SEISM odsF)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from bindense.metrics._common import check_same_shape, counts_at_or_above, default_thresholds, drop_channel_dim

FOOTPRINTS = ("disk", "square")


def max_filter(x: torch.Tensor, radius: int, footprint: str = "disk") -> torch.Tensor:
    """Grey dilation of (B, H, W) maps: max over a disk (Euclidean distance <= radius) or a square.

    Outside the image counts as -inf (no padding artefacts). The disk is built row by row: for each
    vertical offset dy, a horizontal max over half-width floor(sqrt(r^2 - dy^2)), shifted by dy.
    """
    if radius <= 0:
        return x
    if footprint not in FOOTPRINTS:
        raise ValueError(f"unknown footprint {footprint!r}; expected one of {FOOTPRINTS}")
    x4 = x.unsqueeze(1)
    if footprint == "square":
        return F.max_pool2d(x4, 2 * radius + 1, stride=1, padding=radius).squeeze(1)
    h = x.shape[-2]
    padded = F.pad(x4, (0, 0, radius, radius), value=-math.inf)  # rows only
    out = None
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        rows = padded[:, :, radius + dy : radius + dy + h]
        rows = F.max_pool2d(rows, (1, 2 * half + 1), stride=1, padding=(0, half)) if half > 0 else rows
        out = rows if out is None else torch.maximum(out, rows)
    return out.squeeze(1)


class EdgeMetrics(Metric):
    """Approximate ODS F-measure of edge maps, accumulated over the whole split (``odsF_approx``).

    For every threshold t a prediction edge is ``prob >= t``. Counts are pooled over all images:
    - precision(t) = predicted edge pixels with a ground-truth edge within the tolerance / predicted
      edge pixels (ground truth dilated by the tolerance footprint);
    - recall(t) = ground-truth edge pixels with a predicted edge within the tolerance / ground-truth
      edge pixels (dilating the thresholded prediction equals thresholding the max-filtered
      probabilities, so one filter serves all thresholds).
    ``odsF_approx`` = max over t of 2PR/(P+R), ``ods_threshold`` the t reaching it (smallest on ties).

    Tolerance: ``tolerance_px`` pixels, or when None ``round(max_dist * image diagonal)`` like SEISM's
    maxDist (0.0075 for BSDS/PASCAL, 0.011 for NYUD). ``footprint`` "disk" (Euclidean, as SEISM) or
    "square" (Chebyshev, a (2r+1) max-pool). Approximation of SEISM: no non-maximum suppression /
    thinning of predictions and no one-to-one (bipartite) matching, so several predicted pixels can
    match one ground-truth pixel; the numbers run higher than SEISM's and are named ``_approx``.

    ``update(pred, gt)``: pred (B, H, W) or (B, 1, H, W) probabilities (logits with
    ``from_logits=True``); gt the same shape, edge where gt > 0.5; pixels equal to ``ignore_index``
    (if given) are neither ground-truth edges nor counted as predictions.
    """

    is_differentiable = False
    higher_is_better = None  # odsF_approx is, ods_threshold is not a score
    full_state_update = False

    matched_pred: torch.Tensor
    pred_pos: torch.Tensor
    recalled_gt: torch.Tensor
    gt_pos: torch.Tensor

    def __init__(
        self,
        thresholds: int | list[float] | torch.Tensor = 99,
        tolerance_px: int | None = None,
        max_dist: float = 0.0075,
        footprint: str = "disk",
        from_logits: bool = False,
        ignore_index: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if footprint not in FOOTPRINTS:
            raise ValueError(f"unknown footprint {footprint!r}; expected one of {FOOTPRINTS}")
        if tolerance_px is not None and tolerance_px < 0:
            raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
        self.tolerance_px = tolerance_px
        self.max_dist = float(max_dist)
        self.footprint = footprint
        self.from_logits = from_logits
        self.ignore_index = ignore_index
        self.register_buffer("thresholds", default_thresholds(thresholds), persistent=False)
        t = self.thresholds.numel()
        self.add_state("matched_pred", torch.zeros(t, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("pred_pos", torch.zeros(t, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("recalled_gt", torch.zeros(t, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("gt_pos", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def radius(self, height: int, width: int) -> int:
        """Matching tolerance in pixels for an image of this size."""
        if self.tolerance_px is not None:
            return int(self.tolerance_px)
        return int(round(self.max_dist * math.hypot(height, width)))

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        pred = drop_channel_dim(pred, "pred").float()
        gt = drop_channel_dim(gt, "gt")
        check_same_shape(pred, gt, "EdgeMetrics pred/gt")
        if self.from_logits:
            pred = pred.sigmoid()
        counted = torch.ones_like(gt, dtype=torch.bool)
        if self.ignore_index is not None:
            counted = gt != self.ignore_index
        gt_edge = (gt.float() > 0.5) & counted
        pred = torch.where(counted, pred, torch.full_like(pred, -1.0))  # below every threshold

        r = self.radius(gt.shape[-2], gt.shape[-1])
        gt_near = max_filter(gt_edge.float(), r, self.footprint) > 0
        pred_near = max_filter(pred, r, self.footprint)

        thr = self.thresholds
        self.pred_pos += counts_at_or_above(pred[counted], thr)
        self.matched_pred += counts_at_or_above(pred[counted & gt_near], thr)
        self.recalled_gt += counts_at_or_above(pred_near[gt_edge], thr)
        self.gt_pos += gt_edge.sum()

    def pr_curve(self) -> dict[str, torch.Tensor]:
        """Thresholds with the pooled precision, recall and F at each."""
        precision = self.matched_pred.double() / self.pred_pos.clamp(min=1)
        recall = self.recalled_gt.double() / self.gt_pos.clamp(min=1)
        f = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        return {"thresholds": self.thresholds, "precision": precision, "recall": recall, "f": f}

    def compute(self) -> dict[str, torch.Tensor]:
        f = self.pr_curve()["f"]
        best = int(torch.argmax(f))  # first maximum: the smallest threshold on ties
        return {"odsF_approx": f[best].float(), "ods_threshold": self.thresholds[best].float()}
