"""Weight schedules of the distillation loss, registered by name (``distill.schedule``).

A schedule maps the training progress ``p`` in [0, 1] (optimizer steps done / total steps) to a factor that
multiplies the feature and logit weights; ``warmup`` is the fraction of training its ramp takes.
Add one with ``@register_schedule("name")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[float, float], float]

#: name -> ``schedule(progress, warmup) -> factor``; filled by :func:`register_schedule`
SCHEDULES: dict[str, Schedule] = {}


def register_schedule(name: str) -> Callable[[Schedule], Schedule]:
    """Decorator: make ``fn(progress, warmup) -> factor`` selectable as ``distill.schedule=name``."""

    def add(fn: Schedule) -> Schedule:
        if name in SCHEDULES:
            raise ValueError(f"distillation schedule {name!r} is already registered")
        SCHEDULES[name] = fn
        return fn

    return add


def check_schedule(name: str) -> str:
    """``name`` when it is a registered schedule, else a ValueError listing them."""
    if name not in SCHEDULES:
        raise ValueError(
            f"unknown distillation schedule {name!r} (distill.schedule); expected one of {sorted(SCHEDULES)}"
        )
    return name


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
