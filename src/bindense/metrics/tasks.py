"""Which metric serves which task, read from the task registry (:mod:`bindense.tasks`)."""

from __future__ import annotations

from typing import Any

from torchmetrics import Metric

from bindense.tasks import get_task

#: main metric of the multi-task delta_m (:mod:`bindense.metrics.multitask`), which belongs to no task
MTL_METRIC: tuple[str, str] = ("delta_m", "max")


def main_metric(task: str, protocol: str | None = None) -> tuple[str, str]:
    """(metric key, "max" | "min") used for checkpointing and sweeps; ``"mtl"`` is the multi-task delta_m.

    ``protocol`` selects among a task's metrics (depth: ``eigen`` -> d1, ``pooled`` -> rmse_pooled); it is
    ignored by tasks with a single metric.
    """
    if task == "mtl":
        return MTL_METRIC
    spec = get_task(task)
    metric = spec.metric(protocol if len(spec.metrics) > 1 else None)
    return metric.main, metric.direction


def task_metrics(task: str, **kwargs: Any) -> Metric:
    """A fresh metric for ``task``; kwargs go to its constructor, except ``protocol`` which picks the metric
    (depth: ``eigen``, the default, -> DepthMetrics; ``pooled`` -> PooledDepthRMSE)."""
    spec = get_task(task)
    protocol = kwargs.pop("protocol", None) if len(spec.metrics) > 1 else None
    return spec.metric(protocol).factory(**kwargs)
