"""Which metric serves which task: the factory used by the LightningModules, and each task's main metric."""

from __future__ import annotations

from typing import Any

from torchmetrics import Metric

from bindense.metrics.depth import DepthMetrics, PooledDepthRMSE
from bindense.metrics.edge import EdgeMetrics
from bindense.metrics.normals import NormalsMetrics
from bindense.metrics.saliency import SaliencyMetrics
from bindense.metrics.segmentation import SegmentationMetrics

TASKS = ("seg", "parts", "depth", "normals", "edge", "sal")
DEPTH_PROTOCOLS = ("eigen", "pooled")

# (key in the metric's compute() output, "max" | "min") used for checkpointing and sweeps.
# Depth: d1 under the per-image Eigen protocol (BiDense reports it first); rmse_pooled under the
# pooled multi-task protocol (see main_metric). "mtl" is the multi-task delta_m.
MAIN_METRIC: dict[str, tuple[str, str]] = {
    "seg": ("mIoU", "max"),
    "parts": ("mIoU", "max"),
    "depth": ("d1", "max"),
    "normals": ("mean_angle", "min"),
    "edge": ("odsF_approx", "max"),
    "sal": ("maxF", "max"),
    "mtl": ("delta_m", "max"),
}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def _check_protocol(protocol: str) -> None:
    if protocol not in DEPTH_PROTOCOLS:
        raise ValueError(f"unknown depth protocol {protocol!r}; expected one of {DEPTH_PROTOCOLS}")


def main_metric(task: str, protocol: str = "eigen") -> tuple[str, str]:
    """(metric key, "max" | "min") of a task; ``protocol`` matters for depth only."""
    if task == "depth":
        _check_protocol(protocol)
        return ("rmse_pooled", "min") if protocol == "pooled" else MAIN_METRIC["depth"]
    if task != "mtl":
        _check_task(task)
    return MAIN_METRIC[task]


def task_metrics(task: str, **kwargs: Any) -> Metric:
    """A fresh metric for ``task``; kwargs go to its constructor.

    seg, parts -> SegmentationMetrics(num_classes, ignore_index); depth -> DepthMetrics
    (``protocol="eigen"``, the default) or PooledDepthRMSE (``protocol="pooled"``); normals ->
    NormalsMetrics; edge -> EdgeMetrics; sal -> SaliencyMetrics.
    """
    _check_task(task)
    if task in ("seg", "parts"):
        return SegmentationMetrics(**kwargs)
    if task == "depth":
        protocol = kwargs.pop("protocol", "eigen")
        _check_protocol(protocol)
        return PooledDepthRMSE(**kwargs) if protocol == "pooled" else DepthMetrics(**kwargs)
    if task == "normals":
        return NormalsMetrics(**kwargs)
    if task == "edge":
        return EdgeMetrics(**kwargs)
    return SaliencyMetrics(**kwargs)
