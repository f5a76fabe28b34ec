"""Weight schedules of the distillation loss, registered by name (``distill.schedule``).

A schedule maps the training progress ``p`` in [0, 1] (optimizer steps done / total steps) to a factor that
multiplies the feature and logit weights; ``warmup`` is the fraction of training its ramp takes.
Add one with ``@register_schedule("name")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from bindense.registry import Registry

Schedule = Callable[[float, float], float]

#: name -> ``schedule(progress, warmup) -> factor``
SCHEDULES: Registry[Schedule] = Registry("distillation schedule", "distill.schedule")
register_schedule = SCHEDULES.register
check_schedule = SCHEDULES.resolve


def schedule_factor(name: str, progress: float, warmup: float = 0.0) -> float:
    """The factor of schedule ``name`` at ``progress`` (clamped to [0, 1])."""
    return SCHEDULES[check_schedule(name)](min(1.0, max(0.0, float(progress))), float(warmup))


@register_schedule("constant")
def constant(progress: float, warmup: float) -> float:
    """1 throughout."""
    return 1.0


@register_schedule("linear_decay")
def linear_decay(progress: float, warmup: float) -> float:
    """From 1 at the start to 0 at the end: the student is free of the teacher in its last steps."""
    return 1.0 - progress


@register_schedule("cosine_decay")
def cosine_decay(progress: float, warmup: float) -> float:
    """``(1 + cos(pi p)) / 2``: 1 at the start, 0 at the end."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@register_schedule("warmup")
def linear_warmup(progress: float, warmup: float) -> float:
    """From 0 to 1 over the first ``warmup`` of training, then 1 (the student first learns its tasks)."""
    return 1.0 if warmup <= 0 else min(1.0, progress / warmup)


__all__ = ["SCHEDULES", "check_schedule", "register_schedule", "schedule_factor"]
