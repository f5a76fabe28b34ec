"""Teacher-student distillation in one package (docs/RESEARCH.md).

- :mod:`~bindense.distill.teacher`: load a teacher from a bindense checkpoint and freeze it;
- :mod:`~bindense.distill.losses`: feature losses registered by name (``mse``, ``at``) and logit KD;
- :mod:`~bindense.distill.schedules`: weight schedules registered by name;
- :mod:`~bindense.distill.distiller`: :class:`Distiller`, the loss component a LightningModule takes as its
  ``distiller`` constructor argument (built by Hydra from ``conf/distill/*.yaml``: ``distill.distiller``).
"""

from bindense.distill.distiller import MODES, Distiller
from bindense.distill.losses import (
    FEATURE_LOSSES,
    attention_map,
    attention_transfer,
    feature_loss,
    logit_kd,
    normalized_mse,
    register_feature_loss,
)
from bindense.distill.schedules import SCHEDULES, register_schedule, schedule_factor
from bindense.distill.teacher import freeze, is_full_precision, load_teacher

__all__ = [
    "FEATURE_LOSSES",
    "MODES",
    "SCHEDULES",
    "Distiller",
    "attention_map",
    "attention_transfer",
    "feature_loss",
    "freeze",
    "is_full_precision",
    "load_teacher",
    "logit_kd",
    "normalized_mse",
    "register_feature_loss",
    "register_schedule",
    "schedule_factor",
]
