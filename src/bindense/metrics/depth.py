"""Monocular depth metrics: the per-image Eigen protocol (BiDense) and pooled RMSE (Bi-MTDP)."""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from bindense.metrics._common import check_same_shape, drop_channel_dim

CROPS = (None, "eigen", "garg")
DEPTH_KEYS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")


def crop_mask(height: int, width: int, crop: str | None, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (H, W) evaluation region of a named crop.

    - ``None``: the whole image.
    - ``"eigen"``: rows 45:471, cols 41:601 on 480x640 (NYUv2); at another size the bounds are scaled
      proportionally with floor division, e.g. ``45 * H // 480`` (exact at 480x640).
    - ``"garg"``: rows int(0.40810811 H):int(0.99189189 H), cols int(0.03594771 W):int(0.96405229 W)
      (KITTI, any size, truncated to int like the reference code).
    """
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    if crop is None:
        mask[:] = True
    elif crop == "eigen":
        mask[45 * height // 480 : 471 * height // 480, 41 * width // 640 : 601 * width // 640] = True
    elif crop == "garg":
        top, bottom = int(0.40810811 * height), int(0.99189189 * height)
        left, right = int(0.03594771 * width), int(0.96405229 * width)
        mask[top:bottom, left:right] = True
    else:
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
    return mask


class _DepthBase(Metric):
    """Shared clamping / validity / crop logic."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if crop not in CROPS:
            raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.crop = crop

    def _prepare(self, pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, H, W) float64 prediction and ground truth with 1.0 at invalid pixels, and the valid mask."""
        pred = drop_channel_dim(pred, "pred").double()
        gt = drop_channel_dim(gt, "gt").double()
        check_same_shape(pred, gt, f"{type(self).__name__} pred/gt")
        pred = pred.clamp(self.min_depth, self.max_depth)
        valid = (gt > self.min_depth) & (gt < self.max_depth)
        if self.crop is not None:
            valid &= crop_mask(gt.shape[-2], gt.shape[-1], self.crop, gt.device)
        one = torch.ones((), dtype=gt.dtype, device=gt.device)
        # neutral value at invalid pixels: every error term there is exactly 0 and no division by 0
        return torch.where(valid, pred, one), torch.where(valid, gt, one), valid


class DepthMetrics(_DepthBase):
    """Eigen-protocol depth metrics, computed per image and averaged over images.

    Per image: predictions clamped to ``[min_depth, max_depth]``; valid pixels are those with ground
    truth in ``(min_depth, max_depth)`` inside the optional crop (``None``, ``"eigen"`` or ``"garg"``, see
    :func:`crop_mask`). Returns ``d1 d2 d3`` (fraction with max(gt/p, p/gt) < 1.25^i), ``abs_rel``,
    ``sq_rel``, ``rmse``, ``rmse_log``, ``log10`` and ``silog`` = 100 sqrt(mean(e^2) - mean(e)^2) with
    e = log(pred) - log(gt). Images without any valid pixel are skipped (not counted as zeros); their
    number is kept in ``num_skipped``. States are per-metric sums and an image count (DDP-safe).
    """

    sums: torch.Tensor
    count: torch.Tensor
    num_skipped: torch.Tensor

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = None, **kwargs) -> None:
        super().__init__(min_depth, max_depth, crop, **kwargs)
        self.add_state("sums", torch.zeros(len(DEPTH_KEYS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_skipped", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        p, g, valid = self._prepare(pred, gt)
        n = valid.sum(dim=(1, 2))
        keep = n > 0
        w = valid.double()
        denom = n.clamp(min=1).double()

        def img_mean(x: torch.Tensor) -> torch.Tensor:
            return (x * w).sum(dim=(1, 2)) / denom

        ratio = torch.maximum(g / p, p / g)
        e = torch.log(p) - torch.log(g)  # 0 at invalid pixels
        diff = g - p
        mean_e = img_mean(e)
        mean_e2 = img_mean(e * e)
        per_image = torch.stack(
            [
                img_mean((ratio < 1.25).double()),
                img_mean((ratio < 1.25**2).double()),
                img_mean((ratio < 1.25**3).double()),
                img_mean(diff.abs() / g),
                img_mean(diff * diff / g),
                img_mean(diff * diff).sqrt(),
                mean_e2.sqrt(),
                img_mean(e.abs()) / math.log(10.0),
                100.0 * (mean_e2 - mean_e * mean_e).clamp(min=0).sqrt(),
            ],
            dim=1,
        )
        self.sums += (per_image * keep.double().unsqueeze(1)).sum(0)
        self.count += keep.sum()
        self.num_skipped += (~keep).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        mean = self.sums / self.count.clamp(min=1)
        return {k: mean[i].float() for i, k in enumerate(DEPTH_KEYS)}


class PooledDepthRMSE(_DepthBase):
    """Bi-MTDP / multi-task protocol: errors pooled over all valid pixels of the split.

    ``rmse_pooled`` = sqrt(sum of squared errors / number of valid pixels) and ``abs_rel_pooled`` =
    mean |gt - pred| / gt over the same pixels. Clamping, validity and the optional crop are those of
    :class:`DepthMetrics`. The keys differ from the per-image Eigen ``rmse`` on purpose.
    """

    sq_err: torch.Tensor
    abs_rel: torch.Tensor
    num_pixels: torch.Tensor

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = None, **kwargs) -> None:
        super().__init__(min_depth, max_depth, crop, **kwargs)
        self.add_state("sq_err", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("abs_rel", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_pixels", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        p, g, valid = self._prepare(pred, gt)
        diff = g - p  # 0 at invalid pixels
        self.sq_err += (diff * diff).sum()
        self.abs_rel += (diff.abs() / g).sum()
        self.num_pixels += valid.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.num_pixels.clamp(min=1)
        return {
            "rmse_pooled": (self.sq_err / n).sqrt().float(),
            "abs_rel_pooled": (self.abs_rel / n).float(),
        }
