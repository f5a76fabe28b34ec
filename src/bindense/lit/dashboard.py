"""W&B dashboard callback: metric definitions, prediction overlays and per-class IoU tables.

Only acts when a ``WandbLogger`` is attached (offline runs included); see docs/RESEARCH.md for the keys:

- ``define_metric``: ``trainer/global_step`` is the step metric of every key; each ``*_best`` key of the
  module (``best_metrics()``) gets the run summary ``max`` or ``min`` by its direction;
- ``val/predictions/<task>``: the first ``num_samples`` validation images (the val loader is not shuffled, so
  the same images every epoch): segmentation as ``wandb.Image`` with ``predictions`` / ``ground_truth`` masks
  labelled by the dataset's class names, other tasks as coloured ``ground truth | prediction`` images;
- ``val/<task>/per_class_iou``: a ``wandb.Table`` (class, IoU) at the end of each validation, for every task
  whose metric has ``per_class_iou()`` (read before the module resets it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from bindense.tasks import get_task
from bindense.viz import IMAGENET_MEAN, IMAGENET_STD, colorize, denormalize

STEP_KEY = "trainer/global_step"


def wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def define_metrics(experiment: Any, best_keys: Mapping[str, str]) -> None:
    """``trainer/global_step`` as the step of every key; ``{key: "max"|"min"}`` as run-summary rules."""
    experiment.define_metric(STEP_KEY)
    experiment.define_metric("*", step_metric=STEP_KEY, step_sync=True)
    for key, mode in best_keys.items():
        if mode not in ("max", "min"):
            raise ValueError(f"summary mode of {key!r} must be 'max' or 'min', got {mode!r}")
        experiment.define_metric(key, summary=mode, step_metric=STEP_KEY)


def best_keys(pl_module: LightningModule) -> dict[str, str]:
    """``{"val/<metric>_best": "max"|"min"}`` of a module with ``best_metrics()`` (none otherwise)."""
    rules = getattr(pl_module, "best_metrics", None)
    if callable(rules):
        return {f"val/{k}_best": mode for k, mode in rules().items()}
    return {}


def class_labels(names: Sequence[str] | None, num_classes: int, ignore_index: int | None) -> dict[int, str]:
    """``{id: name}`` for W&B masks: the dataset's names, ``class <i>`` where unknown, and the ignore label."""
    labels = {i: (names[i] if names and i < len(names) else f"class {i}") for i in range(num_classes)}
    if ignore_index is not None:
        labels[int(ignore_index)] = "ignore"
    return labels


def _class_names_of(task: str, names: Sequence[str] | None) -> Sequence[str] | None:
    """The data's class names belong to the task whose outputs count ``num_classes`` (seg), not to parts."""
    return names if get_task(task).channels == "num_classes" else None


class WandbDashboard(Callback):
    """Metric definitions, prediction overlays of fixed val images and per-class IoU tables, in W&B.

    Args:
        num_samples: validation images shown each epoch (the first ones of the val loader).
        every_n_epochs: log the predictions every n epochs (and at the last one).
        per_class_iou: log the per-class IoU table at each validation end.
        ignore_index: label of unlabelled pixels in segmentation targets.
        max_depth: colour range of depth maps (None: per image).
    """

    def __init__(
        self,
        num_samples: int = 4,
        every_n_epochs: int = 1,
        per_class_iou: bool = True,
        ignore_index: int | None = 255,
        max_depth: float | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.num_samples = int(num_samples)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.per_class_iou = per_class_iou
        self.ignore_index = ignore_index
        self.max_depth = max_depth
        self.mean, self.std = tuple(mean), tuple(std)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        keys = best_keys(pl_module)
        for logger in wandb_loggers(trainer):
            define_metrics(logger.experiment, keys)

    # ----------------------------------------------------------------------------- predictions
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx or dataloader_idx or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not wandb_loggers(trainer) or not isinstance(outputs, Mapping) or "outputs" not in outputs:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if epoch % self.every_n_epochs and not last:
            return
        images = self.prediction_images(trainer, pl_module, outputs["outputs"], batch)
        for logger in wandb_loggers(trainer):
            logger.log_metrics(images, step=trainer.global_step)

    def prediction_images(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Mapping[str, torch.Tensor], batch: Mapping
    ) -> dict[str, list]:
        import wandb

        tasks = [t for t in getattr(pl_module, "tasks", outputs.keys()) if t in outputs and t in batch]
        n = min(self.num_samples, batch["image"].shape[0])
        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
        logged: dict[str, list] = {}
        for task in tasks:
            target = batch[task][:n]
            pred = (
                pl_module.prediction(task, outputs[task][:n].detach(), target)
                if hasattr(pl_module, "prediction")
                else outputs[task][:n].detach()
            )
            items = []
            for i in range(n):
                if get_task(task).kind == "label":
                    num_classes = int(outputs[task].shape[1])
                    labels = class_labels(_class_names_of(task, names), num_classes, self.ignore_index)
                    masks = {
                        "predictions": {"mask_data": _labels(pred[i]), "class_labels": labels},
                        "ground_truth": {"mask_data": _labels(target[i]), "class_labels": labels},
                    }
                    rgb = denormalize(batch["image"][i], self.mean, self.std)
                    items.append(wandb.Image(rgb, masks=masks, caption=f"val image {i}"))
                else:
                    kw = {"ignore_index": self.ignore_index, "max_depth": self.max_depth}
                    pair = np.concatenate([colorize(task, target[i], **kw), colorize(task, pred[i], **kw)], axis=1)
                    items.append(wandb.Image(pair, caption=f"val image {i}: ground truth | prediction"))
            logged[f"val/predictions/{task}"] = items
        return logged

    # ----------------------------------------------------------------------------- per-class IoU
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # callbacks run before the module's hook, which computes and resets the metrics
        if not self.per_class_iou or trainer.sanity_checking or not wandb_loggers(trainer):
            return
        metrics = getattr(pl_module, "metrics", None)
        if metrics is None or "val" not in metrics:
            return
        import wandb

        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
        tables = {}
        for task, metric in metrics["val"].items():
            if not hasattr(metric, "per_class_iou"):
                continue
            with metric.sync_context():  # the summed confusion matrix under DDP (a no-op on one process)
                iou = metric.per_class_iou().detach().cpu().double().numpy()
            labels = class_labels(_class_names_of(task, names), len(iou), None)
            rows = [[i, labels[i], None if np.isnan(v) else float(v)] for i, v in enumerate(iou)]
            tables[f"val/{task}/per_class_iou"] = wandb.Table(columns=["id", "class", "IoU"], data=rows)
        if tables and trainer.is_global_zero:
            for logger in wandb_loggers(trainer):
                logger.log_metrics(tables, step=trainer.global_step)


def _labels(x: torch.Tensor) -> np.ndarray:
    a = x.detach().cpu().numpy()
    return (a[0] if a.ndim == 3 else a).astype(np.int64)


__all__ = ["WandbDashboard", "best_keys", "class_labels", "define_metrics"]
