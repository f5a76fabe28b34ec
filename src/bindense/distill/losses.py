"""Distillation losses, registered by name: feature losses (``distill.feature_loss``) and logit KD.

A feature loss is ``loss(student, teacher) -> scalar`` on two ``(B, C, H, W)`` maps (the teacher is resized to
the student's spatial size); add one with ``@register_feature_loss("name")`` and select it with
``distill.feature_loss=name`` (docs/RESEARCH.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from bindense.registry import Registry

FeatureLoss = Callable[[Tensor, Tensor], Tensor]

#: name -> feature loss ``loss(student, teacher)``
FEATURE_LOSSES: Registry[FeatureLoss] = Registry("feature loss", "distill.feature_loss")
register_feature_loss = FEATURE_LOSSES.register
check_feature_loss = FEATURE_LOSSES.resolve


def match_size(teacher: Tensor, student: Tensor) -> Tensor:
    """Resize ``teacher`` (bilinear) to the spatial size of ``student`` when they differ."""
    if teacher.shape[-2:] == student.shape[-2:]:
        return teacher
    return F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)


@register_feature_loss("mse")
def normalized_mse(student: Tensor, teacher: Tensor, eps: float = 1e-6) -> Tensor:
    """MSE between per-pixel channel-normalised features: mean over pixels of ``||s/|s| - t/|t|||^2``.

    Each pixel's feature vector is L2-normalised over channels, so the loss is in [0, 4] whatever the
    channel count or feature scale (binary features are much larger than fp32 ones).
    """
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(
            f"feature MSE needs equal channels, got student {student.shape[1]} vs teacher {teacher.shape[1]}"
        )
    teacher = match_size(teacher, student)
    s = F.normalize(student, dim=1, eps=eps)
    t = F.normalize(teacher, dim=1, eps=eps)
    return (s - t).pow(2).sum(1).mean()


def attention_map(feature: Tensor, p: float = 2.0, eps: float = 1e-6) -> Tensor:
    """Spatial attention of Zagoruyko & Komodakis: ``mean_c |f|^p`` flattened and L2-normalised, (B, HW)."""
    return F.normalize(feature.abs().pow(p).mean(1).flatten(1), dim=1, eps=eps)


@register_feature_loss("at")
def attention_transfer(student: Tensor, teacher: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer: mean over samples of ``||A(s) - A(t)||^2`` (channel counts may differ)."""
    teacher = match_size(teacher, student)
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).sum(1).mean()


def feature_loss(student: Tensor, teacher: Tensor, kind: str = "mse") -> Tensor:
    """The registered feature loss ``kind`` of (student, teacher)."""
    return FEATURE_LOSSES[check_feature_loss(kind)](student, teacher)


def logit_kd(student: Tensor, teacher: Tensor, temperature: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` over the class axis 1, averaged over (valid) pixels.

    ``mask`` (B, H, W) selects the pixels that count; the teacher is resized to the student if needed.
    """
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(f"logit KD needs equal classes, got {student.shape[1]} vs {teacher.shape[1]}")
    teacher = match_size(teacher, student)
    log_p_s = F.log_softmax(student / temperature, dim=1)
    log_p_t = F.log_softmax(teacher / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)
    if mask is not None:
        m = mask.to(kl.dtype)
        kl = (kl * m).sum() / m.sum().clamp(min=1.0)
    else:
        kl = kl.mean()
    return kl * temperature**2


__all__ = [
    "FEATURE_LOSSES",
    "attention_map",
    "attention_transfer",
    "check_feature_loss",
    "feature_loss",
    "logit_kd",
    "match_size",
    "normalized_mse",
    "register_feature_loss",
]
