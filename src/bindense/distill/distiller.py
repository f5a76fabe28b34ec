"""Teacher-student distillation as a component any LightningModule takes (single- or multi-task).

``Distiller(images, student_features, student_outputs, progress) -> {"loss/distill": weighted loss}``:

- ``mode="feature"``: a registered feature loss (:mod:`bindense.distill.losses`: ``mse`` channel-normalised,
  ``at`` attention transfer) on named feature points (``backbone.stage1..4``, ``decoder`` or
  ``decoder.<task>``, ``vib.stageK``, ...; globs allowed) between the student and a frozen full-precision
  teacher, averaged over the points, times ``weight``;
- ``mode="logit"``: ``T^2 KL(teacher || student)`` on the logits of ``logit_tasks`` (segmentation by
  default) with temperature ``T``, times ``logit_weight``;
- ``mode="both"``: the sum.

Both weights are multiplied by a registered schedule of the training progress
(:mod:`bindense.distill.schedules`; ``constant`` by default).

The teacher is held outside the module tree: it is not in ``state_dict()`` (student checkpoints stay small),
not in ``parameters()`` (never optimised), untouched by ``.train()`` (always eval) and moved with the module
by ``.to()``. It runs under ``torch.no_grad()``. conf/distill/*.yaml build it (``distill.distiller``) and
``bindense.lit.pipeline.build_module`` passes it to the LightningModule's constructor.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from bindense.distill.losses import check_feature_loss, feature_loss, logit_kd
from bindense.distill.schedules import check_schedule, schedule_factor
from bindense.distill.teacher import freeze, load_teacher

MODES = ("feature", "logit", "both")


class Distiller(nn.Module):
    """Distillation loss from a frozen teacher (see the module docstring).

    Args:
        teacher: a net ``teacher(x, return_features=True) -> (outputs, features)`` (frozen here), or None to
            load it from ``teacher_ckpt`` (a checkpoint of this project, see :func:`load_teacher`).
        teacher_ckpt / teacher_config: checkpoint path and optional run config path of the teacher.
        mode: ``feature | logit | both``.
        weight: weight of the feature loss.
        feature_points: student feature names or globs (matched against the student's feature names).
        feature_map: ``{student name: teacher name}`` for points named differently in the teacher (e.g.
            ``vib.stage4: backbone.stage4``); others use the same name.
        feature_loss: a registered feature loss (``mse``, ``at``).
        logit_weight / temperature / logit_tasks: logit KD settings.
        schedule / warmup: registered weight schedule and its warm-up fraction.
        require_full_precision: refuse a teacher with binary units.
    """

    def __init__(
        self,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | None = None,
        teacher_config: str | None = None,
        mode: str = "feature",
        weight: float = 1.0,
        feature_points: Sequence[str] = ("backbone.*", "decoder*"),
        feature_map: Mapping[str, str] | None = None,
        feature_loss: str = "mse",
        logit_weight: float = 1.0,
        temperature: float = 1.0,
        logit_tasks: Sequence[str] = ("seg",),
        schedule: str = "constant",
        warmup: float = 0.0,
        require_full_precision: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown distillation mode {mode!r} (distill.mode); expected one of {MODES}")
        check_feature_loss(feature_loss)
        check_schedule(schedule)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= warmup <= 1.0:
            raise ValueError(f"distill.warmup is a fraction of training in [0, 1], got {warmup}")
        if teacher is None:
            teacher, _ = load_teacher(teacher_ckpt, teacher_config, require_full_precision)  # frozen
        else:
            teacher = freeze(teacher)
        object.__setattr__(self, "_teacher", teacher)  # not a registered child (see module docstring)
        self.mode = mode
        self.weight = float(weight)
        self.feature_points = list(feature_points)
        self.feature_map = dict(feature_map or {})
        self.feature_loss = feature_loss
        self.logit_weight = float(logit_weight)
        self.temperature = float(temperature)
        self.logit_tasks = list(logit_tasks)
        self.schedule = schedule
        self.warmup = float(warmup)
        self._resolved: dict[str, str] | None = None
        self.last_terms: dict[str, float] = {}

    @property
    def teacher(self) -> nn.Module:
        return self._teacher

    # ----------------------------------------------------------------------------- module plumbing
    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True):  # type: ignore[override]
        super()._apply(fn, recurse)
        self._teacher._apply(fn)
        return self

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self._teacher.eval()  # the teacher never leaves eval mode
        return self

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode}, teacher={type(self._teacher).__name__}, points={self.feature_points}, "
            f"feature_loss={self.feature_loss}, weight={self.weight}, logit_tasks={self.logit_tasks}, "
            f"T={self.temperature}, schedule={self.schedule}"
        )

    @property
    def uses_features(self) -> bool:
        return self.mode in ("feature", "both")

    # ----------------------------------------------------------------------------- loss
    def resolve_points(self, student: Mapping[str, Tensor], teacher: Mapping[str, Tensor]) -> dict[str, str]:
        """``{student name: teacher name}`` of the configured points; a clear error when one is missing."""
        names: list[str] = []
        for pattern in self.feature_points:
            hits = [n for n in student if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise KeyError(
                    f"distill.feature_points entry {pattern!r} matches no student feature; "
                    f"the student has {sorted(student)}"
                )
            names += [n for n in hits if n not in names]
        pairs = {n: self.feature_map.get(n, n) for n in names}
        absent = {s: t for s, t in pairs.items() if t not in teacher}
        if absent:
            raise KeyError(
                f"the teacher has no feature {sorted(set(absent.values()))} for student points {sorted(absent)}; "
                f"teacher features: {sorted(teacher)} (map names with distill.feature_map)"
            )
        for s, t in pairs.items():
            if self.feature_loss == "mse" and student[s].shape[1] != teacher[t].shape[1]:
                raise ValueError(
                    f"feature point {s!r}: student has {student[s].shape[1]} channels, teacher {t!r} has "
                    f"{teacher[t].shape[1]}; use a teacher of the same width or distill.feature_loss=at"
                )
        return pairs

    def factor(self, progress: float) -> float:
        """The schedule's weight factor at training progress ``progress`` in [0, 1]."""
        return schedule_factor(self.schedule, progress, self.warmup)

    def forward(
        self,
        images: Tensor,
        student_features: Mapping[str, Tensor] | None,
        student_outputs: Mapping[str, Tensor],
        progress: float = 0.0,
    ) -> dict[str, Tensor]:
        if self._teacher.training:
            self._teacher.eval()
        with torch.no_grad():
            t_outputs, t_features = self._teacher(images, return_features=True)
        total = images.new_zeros(())
        factor = self.factor(progress)
        self.last_terms = {}
        if self.uses_features:
            if student_features is None:
                raise ValueError("feature distillation needs the student's features (return_features=True)")
            if self._resolved is None:
                self._resolved = self.resolve_points(student_features, t_features)
            losses = []
            for s, t in self._resolved.items():
                value = feature_loss(student_features[s], t_features[t].detach(), self.feature_loss)
                self.last_terms[f"feature/{s}"] = float(value.detach())
                losses.append(value)
            total = total + factor * self.weight * torch.stack(losses).mean()
        if self.mode in ("logit", "both"):
            kd = []
            for task in self.logit_tasks:
                if task not in student_outputs or task not in t_outputs:
                    raise KeyError(
                        f"logit KD on {task!r}: student outputs {sorted(student_outputs)}, "
                        f"teacher outputs {sorted(t_outputs)}"
                    )
                value = logit_kd(student_outputs[task], t_outputs[task].detach(), self.temperature)
                self.last_terms[f"logit/{task}"] = float(value.detach())
                kd.append(value)
            total = total + factor * self.logit_weight * torch.stack(kd).mean()
        return {"loss/distill": total}


__all__ = ["MODES", "Distiller"]
