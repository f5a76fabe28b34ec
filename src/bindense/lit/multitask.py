"""Multi-task training (Bi-MTDP, docs/MULTITASK.md#1-the-paper-and-our-choices): task losses, VIB KL term, delta_m,
distillation hook.

:class:`MultiTaskLitModule` is :class:`~bindense.lit.dense.DenseLitModule` with

- the multi-task losses below (configured per task, weighted by ``loss_weights``);
- ``vib_beta * KL`` of the net's VIB (``net.last_kl``) as its own training term, logged ``train/loss/vib_kl``
  (the raw KL as ``<stage>/vib_kl``; evaluation losses are the task losses only);
- ``mtl/delta_m`` against single-task ``baselines`` (``{"task/metric": value}`` in the metrics' units) at
  the end of each evaluation epoch, with its running best ``val/mtl/delta_m_best``;
- edge / saliency logits passed through a sigmoid before their metrics;
- the optional teacher-student ``distiller`` of the base module (a constructor argument, see
  :mod:`bindense.distill`), whose loss is added in training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bindense.lit.dense import DenseLitModule
from bindense.lit.losses import match_size
from bindense.metrics import MultiTaskDelta, delta_m
from bindense.tasks import get_task, task_names


class DepthL1Loss(nn.Module):
    """Mean absolute depth error over the valid pixels (ground truth > ``min_depth``; 0 marks invalid)."""

    def __init__(self, min_depth: float = 0.0) -> None:
        super().__init__()
        self.min_depth = float(min_depth)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 3:
            target = target[:, None]
        pred = match_size(pred, target)
        valid = target > self.min_depth
        if not valid.any():
            return pred.sum() * 0.0
        return (pred[valid] - target[valid]).abs().mean()


class NormalsL1Loss(nn.Module):
    """L1 between L2-normalised predicted normals and the unit ground truth, over valid elements.

    A pixel is valid when its ground-truth vector is non-zero; the mean runs over its three components.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = F.normalize(match_size(pred, target), dim=1)
        valid = (target.abs().sum(1, keepdim=True) > 0).expand_as(target)
        if not valid.any():
            return pred.sum() * 0.0
        return (pred[valid] - target[valid]).abs().mean()


class BinaryMapLoss(nn.Module):
    """Binary cross-entropy on logits for edge / saliency maps, averaged over the non-ignored pixels.

    ``pos_weight=w`` gives the balanced form of the multi-task literature,
    ``-(w * y * log p + (1 - w) * (1 - y) * log(1 - p))`` (edges: w = 0.95); ``None`` gives plain BCE.
    """

    def __init__(self, pos_weight: float | None = None, ignore_index: int | None = 255) -> None:
        super().__init__()
        if pos_weight is not None and not 0.0 < pos_weight < 1.0:
            raise ValueError(f"pos_weight must be in (0, 1), got {pos_weight}")
        self.pos_weight = None if pos_weight is None else float(pos_weight)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 3:
            target = target[:, None]
        logits = match_size(logits, target)
        valid = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            valid = target != self.ignore_index
        if not valid.any():
            return logits.sum() * 0.0
        y = torch.where(valid, target, torch.zeros_like(target)).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if self.pos_weight is not None:
            loss = loss * (self.pos_weight * y + (1.0 - self.pos_weight) * (1.0 - y))
        return loss[valid].mean()


class MultiTaskLitModule(DenseLitModule):
    """DenseLitModule for several tasks with a VIB term, delta_m and distillation.

    Args (besides those of :class:`~bindense.lit.dense.DenseLitModule`):
        vib_beta: weight of the VIB KL (0 or a net without VIB: no term).
        baselines: single-task metrics ``{"task/metric": value}`` for ``mtl/delta_m`` (empty: not computed).
        distiller: optional teacher-student distiller ``distiller(images, features, outputs) -> {name: loss}``.
    """

    def __init__(
        self,
        net: nn.Module,
        tasks: Iterable[str],
        losses: Mapping[str, nn.Module] | None,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
        loss_weights: Mapping[str, float] | None = None,
        metrics: Mapping[str, Mapping[str, Any]] | None = None,
        vib_beta: float = 0.0,
        baselines: Mapping[str, float] | None = None,
        distiller: nn.Module | None = None,
        compile: bool | Mapping[str, Any] = False,
    ) -> None:
        tasks = list(tasks)
        baselines = {str(k): float(v) for k, v in (baselines or {}).items()}
        unknown = sorted({k.split("/", 1)[0] for k in baselines} - set(tasks))
        if unknown:
            raise ValueError(f"delta_m baselines name tasks {unknown} that are not trained ({tasks})")
        # read by best_metrics() during the base constructor
        self._delta = MultiTaskDelta(baselines) if baselines else None
        super().__init__(
            net, tasks, losses, optimizer, scheduler, scheduler_interval, loss_weights, metrics, distiller, compile
        )
        self.hparams.update({"vib_beta": float(vib_beta), "baselines": baselines})
        self.vib_beta = float(vib_beta)

    # ----------------------------------------------------------------------------- extension points
    def best_metrics(self) -> dict[str, str]:
        best = super().best_metrics()
        if self._delta is not None:
            best["mtl/delta_m"] = "max"
        return best

    def extra_losses(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor], features: Any, stage: str
    ) -> dict[str, torch.Tensor]:
        terms = dict(super().extra_losses(batch, outputs, features, stage))
        kl = getattr(self.net, "last_kl", None)
        if kl is not None and self.vib_beta > 0 and stage == "train":
            terms["loss/vib_kl"] = self.vib_beta * kl
        if kl is not None:  # the raw KL, every stage (a 2-part key: not a task metric)
            self.log(f"{stage}/vib_kl", kl.detach(), batch_size=batch["image"].shape[0], sync_dist=stage != "train")
        return terms

    def epoch_end_metrics(self, stage: str, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        derived = dict(super().epoch_end_metrics(stage, values))
        if self._delta is not None:
            derived["mtl/delta_m"] = torch.tensor(self._delta(values), dtype=torch.float32, device=self.device)
        return derived

    def monitor_keys(self) -> list[str]:
        keys = super().monitor_keys()
        if self._delta is not None:
            keys.insert(1, "val/mtl/delta_m")
        return keys


def summarize_metrics(
    metrics: Mapping[str, float], baselines: Mapping[str, float] | None = None, stage: str = "val"
) -> dict[str, float]:
    """One row of a multi-task results table from a run's final metrics (e.g. ``summary.json["metrics"]``).

    Returns ``{"<task>/<main metric>": value}`` for every task found under ``stage`` (depth: ``rmse_pooled``
    when logged, else ``d1``) and ``mtl/delta_m``: recomputed against ``baselines`` when given (so runs
    logged without, or with other, baselines compare on the same S_t; omitted for a run that lacks one of the
    baseline tasks, e.g. a single-task run), else the logged value if any.
    """
    row: dict[str, float] = {}
    for task in task_names():
        logged = [m.main for m in get_task(task).metrics.values() if f"{stage}/{task}/{m.main}" in metrics]
        if logged:  # the last protocol logged (depth: rmse_pooled over d1)
            key = f"{task}/{logged[-1]}"
            row[key] = float(metrics[f"{stage}/{key}"])
    if baselines:
        if all(k in row for k in baselines):
            row["mtl/delta_m"] = delta_m(row, baselines)
    elif f"{stage}/mtl/delta_m" in metrics:
        row["mtl/delta_m"] = float(metrics[f"{stage}/mtl/delta_m"])
    return row
