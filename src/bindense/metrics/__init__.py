"""torchmetrics Metrics for every task, the multi-task delta_m, and the task -> metric factory.

Every ``compute()`` returns a dict of scalar tensors; states are tensors reduced by sum under DDP.
Protocols and approximations are described in docs/METRICS.md.
"""

from bindense.metrics.depth import DEPTH_KEYS, DepthMetrics, PooledDepthRMSE, crop_mask
from bindense.metrics.edge import EdgeMetrics, max_filter
from bindense.metrics.multitask import (
    MultiTaskDelta,
    delta_m,
    flatten_metrics,
    metric_direction,
)
from bindense.metrics.normals import NormalsMetrics
from bindense.metrics.saliency import SaliencyMetrics
from bindense.metrics.segmentation import SegmentationMetrics
from bindense.metrics.tasks import MTL_METRIC, main_metric, task_metrics

__all__ = [
    "DEPTH_KEYS",
    "MTL_METRIC",
    "DepthMetrics",
    "EdgeMetrics",
    "MultiTaskDelta",
    "NormalsMetrics",
    "PooledDepthRMSE",
    "SaliencyMetrics",
    "SegmentationMetrics",
    "crop_mask",
    "delta_m",
    "flatten_metrics",
    "main_metric",
    "max_filter",
    "metric_direction",
    "task_metrics",
]
