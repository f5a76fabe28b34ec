"""Surface normal metrics: angular error statistics in degrees over all valid pixels of a split."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from bindense.metrics._common import check_same_shape

WITHIN_DEG = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}


class NormalsMetrics(Metric):
    """Angular error between predicted and ground-truth normals, pooled over all valid pixels.

    ``update(pred, gt)`` with (B, 3, H, W) maps. Both vectors are normalised inside; a pixel is valid
    when the ground-truth norm is > 0 (zero vectors mark missing normals). The angle is
    ``atan2(|p x g|, p . g)`` in float64 (accurate near 0 deg, unlike acos).

    Returns ``mean_angle``, ``median_angle``, ``rmse_angle`` (degrees) and ``within_11_25``,
    ``within_22_5``, ``within_30`` (fraction of pixels with error strictly below the bound).
    The median comes from a histogram of the errors with ``bin_deg`` (0.01 deg) bins over [0, 180],
    clamped to the exact smallest and largest error, so it is within half a bin (0.005 deg) of the
    exact median while the state stays fixed-size and DDP-reducible; every other value is exact.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    sums: torch.Tensor
    within: torch.Tensor
    num_pixels: torch.Tensor
    hist: torch.Tensor
    min_angle: torch.Tensor
    max_angle: torch.Tensor

    def __init__(self, bin_deg: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bin_deg = float(bin_deg)
        self.num_bins = int(round(180.0 / self.bin_deg))
        self.add_state("sums", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")  # sum a, sum a^2
        self.add_state("within", torch.zeros(len(WITHIN_DEG), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_pixels", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("hist", torch.zeros(self.num_bins, dtype=torch.long), dist_reduce_fx="sum")
        inf = torch.tensor(float("inf"), dtype=torch.float64)
        self.add_state("min_angle", inf.clone(), dist_reduce_fx="min")
        self.add_state("max_angle", -inf, dist_reduce_fx="max")

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        if pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"pred must be (B,3,H,W), got shape {tuple(pred.shape)}")
        check_same_shape(pred, gt, "NormalsMetrics pred/gt")
        p = pred.double().movedim(1, -1)  # (B, H, W, 3)
        g = gt.double().movedim(1, -1)
        g_norm = g.norm(dim=-1)
        valid = g_norm > 0
        p = p[valid]
        g = g[valid] / g_norm[valid].unsqueeze(-1)
        p = p / p.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # a zero prediction gives 90 deg
        angle = torch.rad2deg(torch.atan2(torch.linalg.cross(p, g).norm(dim=-1), (p * g).sum(-1)))

        self.sums += torch.stack([angle.sum(), (angle * angle).sum()])
        self.within += torch.stack([(angle < t).sum() for t in WITHIN_DEG.values()])
        self.num_pixels += angle.numel()
        bins = (angle / self.bin_deg).long().clamp(0, self.num_bins - 1)
        self.hist += torch.bincount(bins, minlength=self.num_bins)
        if angle.numel() > 0:
            self.min_angle = torch.minimum(self.min_angle, angle.min())
            self.max_angle = torch.maximum(self.max_angle, angle.max())

    def _median(self) -> torch.Tensor:
        """Centre of the bin holding the median (mean of both middle bins if N is even).

        Clamped to the exact [min, max] of the errors, so a constant error (e.g. 0) is returned exactly.
        """
        n = int(self.num_pixels)
        if n == 0:
            return torch.zeros((), dtype=torch.float64, device=self.hist.device)
        cum = self.hist.cumsum(0)
        # 0-based ranks of the middle element(s): (n-1)//2 and n//2
        lo = torch.searchsorted(cum, torch.tensor([(n - 1) // 2 + 1, n // 2 + 1], device=cum.device))
        median = ((lo.double() + 0.5) * self.bin_deg).mean()
        return torch.minimum(torch.maximum(median, self.min_angle), self.max_angle)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.num_pixels.clamp(min=1)
        mean = self.sums[0] / n
        out = {
            "mean_angle": mean.float(),
            "median_angle": self._median().float(),
            "rmse_angle": (self.sums[1] / n).sqrt().float(),
        }
        fractions = self.within.double() / n
        for key, frac in zip(WITHIN_DEG, fractions):
            out[key] = frac.float()
        return out
