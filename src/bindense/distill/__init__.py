"""Teacher-student distillation: teacher loading from a bindense checkpoint, feature and logit losses.

The LightningModule-side component (:class:`bindense.lit.distill.Distiller`) combines them.
"""

from bindense.distill.losses import (
    FEATURE_LOSSES,
    attention_map,
    attention_transfer,
    feature_loss,
    logit_kd,
    normalized_mse,
)
from bindense.distill.teacher import freeze, is_full_precision, load_teacher

__all__ = [
    "FEATURE_LOSSES",
    "attention_map",
    "attention_transfer",
    "feature_loss",
    "freeze",
    "is_full_precision",
    "load_teacher",
    "logit_kd",
    "normalized_mse",
]
