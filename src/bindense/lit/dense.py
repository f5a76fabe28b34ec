"""``DenseLitModule``: one LightningModule for every dense task, driven by its ``tasks`` list.

Segmentation (``tasks=["seg"]``), depth (``["depth"]``) and multi-task (several tasks) share the same
steps: the net returns ``{task: prediction}``, each task has a loss module, a loss weight and one metric
instance per stage (``val`` and ``test``). Logged keys: ``train/loss`` (per step), ``stage/loss``,
``stage/<task>/loss``, ``stage/<task>/<metric>`` and, while fitting, the running best of each task's main
metric ``val/<task>/<main>_best`` (what checkpointing and sweepers follow; kept in checkpoints). Every
``train/...`` loss term is also averaged per epoch as ``train/..._epoch``.

Teacher-student distillation: the optional ``distiller`` constructor argument (a
:class:`bindense.distill.Distiller`, built by Hydra from ``conf/distill``); its loss is added in training.

Extension points for subclasses (multi-task):

- ``return_features``: set True and ``forward_step`` calls ``net(x, return_features=True)`` (True with a
  distiller);
- ``extra_losses(batch, outputs, features, stage)``: more named loss terms (a KL, a distillation loss),
  added unweighted to the total and logged as ``stage/<name>``;
- ``prediction(task, output, target)``: the output as the task's metric wants it (resized, arg-maxed);
- ``epoch_end_metrics(stage, values)``: derived metrics from the per-task values (e.g. ``mtl/delta_m``);
- ``best_metrics()``: ``{key: "max"|"min"}`` of the values whose running best is tracked;
- ``monitor_keys()``: the keys a monitor may name (checked before training).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MaxMetric, MinMetric

from bindense.binary import set_ede_progress
from bindense.lit.losses import match_size
from bindense.metrics import main_metric, task_metrics
from bindense.tasks import check_tasks, get_task

STAGES = ("val", "test")


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or Inf; training stops before the optimizer step."""


class DenseLitModule(LightningModule):
    """Train / validate / test a dense-prediction net on one or several tasks.

    Args:
        net: ``net(image) -> {task: prediction}`` (and ``net(image, return_features=True)``).
        tasks: the tasks trained and evaluated (keys of the batch and of the net's outputs).
        losses: ``{task: loss module}``; entries for tasks not in ``tasks`` are ignored; ``None`` gives every
            task its default loss (``Task.loss``, :mod:`bindense.tasks`).
        optimizer: a partial ``optimizer(params=...)`` (Hydra ``_partial_: true``).
        scheduler: a partial ``scheduler(optimizer=...)``; ``total_steps`` is filled from the trainer
            when the scheduler takes it (OneCycleLR), so the schedule spans the whole run.
        scheduler_interval: ``"step"`` or ``"epoch"``.
        loss_weights: ``{task: weight}``, default 1 for each task.
        metrics: ``{task: kwargs of bindense.metrics.task_metrics}`` (``protocol`` selects the depth one).
        distiller: optional teacher-student loss ``distiller(images, features, outputs, progress) ->
            {name: loss}`` (:class:`bindense.distill.Distiller`), added in training only.
        compile: run the net's training forward (and so its backward) through ``torch.compile``: ``True``, or a
            mapping of ``torch.compile`` keyword arguments (``{mode: max-autotune}``, ``{backend: eager}``).
            Evaluation stays eager. ``self.net`` itself is not wrapped, so checkpoints, export and resume see the
            same state-dict keys as without it (docs/TRAINING.md, "torch.compile").
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
        distiller: nn.Module | None = None,
        compile: bool | Mapping[str, Any] = False,
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        if not self.tasks:
            raise ValueError("DenseLitModule needs at least one task")
        check_tasks(self.tasks)
        if losses is None:
            losses = {t: get_task(t).make_loss() for t in self.tasks}
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise ValueError(f"no loss configured for task(s) {missing}; add them under module.losses")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        metric_kwargs = {t: dict((metrics or {}).get(t) or {}) for t in self.tasks}
        self.save_hyperparameters(
            {
                "tasks": self.tasks,
                "loss_weights": dict(loss_weights or {}),
                "metrics": metric_kwargs,
                "scheduler_interval": scheduler_interval,
                "compile": dict(compile) if isinstance(compile, Mapping) else bool(compile),
            },
            logger=False,
        )
        self.net = net
        self.losses = nn.ModuleDict({t: losses[t] for t in self.tasks})
        self.loss_weights = {t: float((loss_weights or {}).get(t, 1.0)) for t in self.tasks}
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.distiller = distiller
        self.return_features = distiller is not None
        if not isinstance(compile, (bool, Mapping)):
            raise ValueError(f"module.compile: expected true, false or torch.compile options, got {compile!r}")
        self.compile_options = dict(compile) if isinstance(compile, Mapping) else ({} if compile else None)
        # torch.compile of ``self.net.__call__``, made at the first training step: a function, not a submodule, so
        # the state dict keeps the keys ``net.*`` (no ``_orig_mod.``)
        self._compiled_net: Callable[..., Any] | None = None

        self.main_keys = {t: main_metric(t, metric_kwargs[t].get("protocol")) for t in self.tasks}
        self.metrics = nn.ModuleDict(
            {s: nn.ModuleDict({t: task_metrics(t, **metric_kwargs[t]) for t in self.tasks}) for s in STAGES}
        )
        # running best of each main metric; persistent so that a resumed run keeps it
        self.best = nn.ModuleDict()
        for key, mode in self.best_metrics().items():
            tracker = MaxMetric() if mode == "max" else MinMetric()
            tracker.persistent(True)
            self.best[key.replace("/", "__")] = tracker

    # ----------------------------------------------------------------------------- extension points
    def best_metrics(self) -> dict[str, str]:
        """``{"task/metric": "max"|"min"}`` whose running best is logged as ``val/task/metric_best``."""
        return {f"{t}/{key}": mode for t, (key, mode) in self.main_keys.items()}

    def extra_losses(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor], features: Any, stage: str
    ) -> dict[str, torch.Tensor]:
        """Additional named loss terms (already weighted): the distillation loss in training, if any."""
        if self.distiller is None or stage != "train":
            return {}
        return self.distiller(batch["image"], features, outputs, progress=self.train_progress())

    def train_progress(self) -> float:
        """Optimizer steps done / total steps of the fit in [0, 1] (0 outside a trainer)."""
        trainer = self._trainer
        total = trainer.estimated_stepping_batches if trainer is not None else 0
        if not total or total == float("inf"):
            return 0.0
        return min(1.0, self.global_step / total)

    def epoch_end_metrics(self, stage: str, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Metrics derived from ``{"task/metric": value}`` at the end of an evaluation epoch; none here."""
        return {}

    def monitor_keys(self) -> list[str]:
        """Keys a checkpoint / early-stopping / sweeper monitor can follow: losses, main metrics, bests."""
        keys = ["val/loss"] + [f"val/{t}/loss" for t in self.tasks]
        keys += [f"val/{t}/{key}" for t, (key, _) in self.main_keys.items()]
        return keys + [f"val/{k}_best" for k in self.best_metrics()]

    # ----------------------------------------------------------------------------- steps
    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(image)

    def forward_step(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
        """Run the net on ``batch["image"]``: (outputs, features or None)."""
        net = self.training_net()
        if self.return_features:
            outputs, features = net(batch["image"], return_features=True)
            return outputs, features
        return net(batch["image"]), None

    def training_net(self) -> Callable[..., Any]:
        """What runs the net now: its ``torch.compile`` (``compile=True``, training with gradients) or the net."""
        if self.compile_options is None or not (self.training and torch.is_grad_enabled()):
            return self.net
        if self._compiled_net is None:
            self._compiled_net = torch.compile(self.net.__call__, **self.compile_options)
        return self._compiled_net

    def shared_step(
        self, batch: Mapping[str, Any], stage: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """(outputs, named loss terms, weighted total loss) for one batch."""
        outputs, features = self.forward_step(batch)
        terms = {t: self.losses[t](outputs[t], batch[t]) for t in self.tasks}
        total = sum(self.loss_weights[t] * terms[t] for t in self.tasks)
        extra = self.extra_losses(batch, outputs, features, stage)
        for value in extra.values():
            total = total + value
        return outputs, {**terms, **extra}, total

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        _, terms, total = self.shared_step(batch, "train")
        self._check_finite(total, terms)
        bs = batch["image"].shape[0]
        self.log("train/loss", total, on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        step_terms = {self._term_key("train", k): v for k, v in terms.items()}
        self.log_dict(step_terms, batch_size=bs)
        # the same terms averaged over the epoch (``<key>_epoch``), for short runs and dashboards
        epoch_terms = {f"{k}_epoch": v.detach() for k, v in {"train/loss": total, **step_terms}.items()}
        self.log_dict(epoch_terms, on_step=False, on_epoch=True, batch_size=bs)
        return total

    def _eval_step(self, batch: Mapping[str, Any], stage: str) -> dict[str, Any]:
        outputs, terms, total = self.shared_step(batch, stage)
        bs = batch["image"].shape[0]
        self.log(f"{stage}/loss", total, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log_dict({self._term_key(stage, k): v for k, v in terms.items()}, batch_size=bs, sync_dist=True)
        for t in self.tasks:
            self.metrics[stage][t].update(self.prediction(t, outputs[t], batch[t]), batch[t])
        return {"loss": total, "outputs": outputs}

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self.forward_step(batch)[0]

    def prediction(self, task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The net's output as the metric expects it, by the task's kind: resized to the target's spatial
        size; label tasks arg-maxed (so a head wider than the label set, e.g. ADE20K's 151 outputs for 150
        classes, counts its extra outputs as wrong predictions); probability tasks through a sigmoid."""
        output = match_size(output, target if target.ndim == 4 else target[:, None])
        kind = get_task(task).kind
        if kind == "label":
            return output.argmax(1)
        return torch.sigmoid(output) if kind == "probability" else output

    def _term_key(self, stage: str, name: str) -> str:
        return f"{stage}/{name}/loss" if name in self.tasks else f"{stage}/{name}"

    def _check_finite(self, total: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> None:
        finite = bool(torch.isfinite(total.detach()).all())
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        last = ""
        if self._trainer is not None and self.trainer.checkpoint_callback is not None:
            last = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or ""
        parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise NonFiniteLossError(
            f"non-finite training loss {float(total.detach())} at epoch {self.current_epoch}, "
            f"global step {self.global_step} ({parts}). Training stopped before this update; "
            f"last good checkpoint: {last or 'none saved yet'}. Try a lower module.optimizer.lr, "
            "trainer.gradient_clip_val=1.0, or check the data."
        )

    # ----------------------------------------------------------------------------- epoch hooks
    def on_train_start(self) -> None:
        # a resumed OneCycleLR keeps the length of the run that saved it: refuse a different one clearly
        for config in self.trainer.lr_scheduler_configs:
            total = getattr(config.scheduler, "total_steps", None)
            epochwise = config.interval == "epoch"
            expected = self.trainer.max_epochs if epochwise else self.trainer.estimated_stepping_batches
            if total is not None and int(total) != int(expected):
                raise ValueError(
                    f"the LR schedule spans {total} steps but this run has {int(expected)}: a run resumed with "
                    "ckpt_path must keep the trainer.max_epochs, batch size and data of the run that saved it"
                )

    def on_train_epoch_start(self) -> None:
        # AdaBin's EDE schedule; a no-op for nets without AdaBin weights
        set_ede_progress(self.net, self.current_epoch / max(1, self.trainer.max_epochs or 1))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def _log_epoch_metrics(self, stage: str) -> None:
        values: dict[str, torch.Tensor] = {}
        for t in self.tasks:
            metric = self.metrics[stage][t]
            values.update({f"{t}/{k}": v for k, v in metric.compute().items()})
            metric.reset()
        values.update(self.epoch_end_metrics(stage, values))
        logged = {f"{stage}/{k}": v.float() for k, v in values.items()}
        if stage == "val" and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            for key in self.best_metrics():
                tracker = self.best[key.replace("/", "__")]
                tracker.update(values[key])
                logged[f"val/{key}_best"] = tracker.compute().float()
        self.log_dict(logged, sync_dist=True)

    # ----------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        kwargs: dict[str, Any] = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            steps = self.trainer.estimated_stepping_batches
            if self.scheduler_interval == "epoch":
                steps = self.trainer.max_epochs
            kwargs["total_steps"] = int(steps)
        scheduler = self.scheduler_factory(optimizer=optimizer, **kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval, "frequency": 1},
        }
