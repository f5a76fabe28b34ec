"""Semantic segmentation (and human parts): pixel accuracy and mIoU over a whole split."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from bindense.metrics._common import check_same_shape, drop_channel_dim


class SegmentationMetrics(Metric):
    """pixAcc and mIoU accumulated over the whole set through one confusion matrix.

    ``update(preds, target)``: ``preds`` are logits/probabilities (B, C, H, W) (arg-maxed over C) or
    labels (B, H, W); ``target`` is (B, H, W) (or (B, 1, H, W)) integer labels.

    - Pixels whose target is ``ignore_index`` or outside ``[0, num_classes)`` are not counted.
    - A predicted label outside ``[0, num_classes)`` counts as a wrong prediction (a miss for the
      target class, a false positive for no class).
    - ``pixAcc`` = correct / counted pixels; ``mIoU`` = mean IoU over the classes with a non-empty
      union (present in the ground truth or predicted somewhere in the split); classes absent from
      both are left out instead of counted as 0 or 1. Both are fractions in [0, 1].
    - ``per_class_iou()`` gives the IoU vector (NaN for classes with an empty union); it is kept out of
      ``compute()`` so that every logged value is a scalar.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: torch.Tensor

    def __init__(self, num_classes: int, ignore_index: int | None = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        # rows: target class; columns: predicted class, plus one column for out-of-range predictions
        self.add_state("confmat", torch.zeros(num_classes, num_classes + 1, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        target = drop_channel_dim(target, "target").long()
        if preds.ndim == 4 and preds.shape[1] != 1:  # scores; (B, 1, H, W) is read as labels
            if preds.shape[1] != self.num_classes:
                raise ValueError(f"preds has {preds.shape[1]} channels, expected {self.num_classes}")
            preds = preds.argmax(dim=1)
        else:
            preds = drop_channel_dim(preds, "preds")
            if preds.is_floating_point():
                preds = preds.round()
            preds = preds.long()
        check_same_shape(preds, target, "SegmentationMetrics preds/target")

        c = self.num_classes
        valid = (target >= 0) & (target < c)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        t = target[valid]
        p = preds[valid]
        p = torch.where((p >= 0) & (p < c), p, torch.full_like(p, c))
        self.confmat += torch.bincount(t * (c + 1) + p, minlength=c * (c + 1)).view(c, c + 1)

    def per_class_iou(self) -> torch.Tensor:
        """IoU of every class (float64, NaN where the class has an empty union)."""
        cm = self.confmat.double()
        inter = cm.diagonal()
        union = cm.sum(1) + cm[:, : self.num_classes].sum(0) - inter
        return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))

    def compute(self) -> dict[str, torch.Tensor]:
        cm = self.confmat.double()
        total = cm.sum()
        pix_acc = cm.diagonal().sum() / total if total > 0 else cm.new_zeros(())
        iou = self.per_class_iou()
        present = ~torch.isnan(iou)
        miou = iou[present].mean() if present.any() else cm.new_zeros(())
        return {"pixAcc": pix_acc.float(), "mIoU": miou.float()}
