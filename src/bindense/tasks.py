"""The task registry: everything bindense knows about a dense prediction task, in one place.

A :class:`Task` declares its output channels, its head, its kind (which decides arg-max vs sigmoid before
the metric, how the transforms encode and pad its maps, and its colour map), its default loss and its
metric(s) with the main key and direction. The model builder, the LightningModules, the metrics, the
transforms and the visualisation all ask this registry (:func:`get_task`); none keeps its own task list.
Adding a task is one :func:`register_task` call (docs/TASKS.md has an example).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn
from torchmetrics import Metric

from bindense.registry import Registry

Kind = Literal["label", "probability", "regression"]
Direction = Literal["max", "min"]
KINDS: tuple[str, ...] = ("label", "probability", "regression")
_DEFAULT_DISPLAY = {"label": "labels", "probability": "probability", "regression": "scalar"}


@dataclass(frozen=True)
class TaskMetric:
    """One evaluation protocol of a task: the metric factory, its main key and every key's direction.

    ``directions`` maps the keys of the metric's ``compute()`` that are scores to ``"max"`` (higher is better)
    or ``"min"``; keys left out (thresholds) are not scores.
    """

    factory: Callable[..., Metric]
    main: str
    directions: Mapping[str, Direction]

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.directions.items() if v not in ("max", "min")}
        if bad:
            raise ValueError(f"metric directions must be 'max' or 'min', got {bad}")
        if self.main not in self.directions:
            raise ValueError(f"main metric {self.main!r} has no direction in {dict(self.directions)}")

    @property
    def direction(self) -> Direction:
        return self.directions[self.main]


@dataclass(frozen=True)
class Task:
    """A dense prediction task.

    Args:
        name: the key of the task's target in a batch and of its output in the model's output dict.
        kind: ``label`` (integer classes: arg-max before the metric, nearest resampling, padding marks
            ``ignore_index``), ``probability`` (a map in [0, 1]: the head's logits go through a sigmoid before
            the metric) or ``regression`` (values used as they are; padding marks 0 = invalid).
        head: the head output, a key of :data:`bindense.models.heads.HEADS`: ``logits`` (the segmentation
            head), ``scaled_sigmoid`` (sigmoid times ``max_depth``), ``normalized`` (L2-normalised over the
            channels) or ``linear`` (the last conv as it is; logits of a ``probability`` task).
        channels: output channels, or the data-config key that holds them (``num_classes``).
        loss: factory of the default loss (used for the tasks a LightningModule is given no loss for).
        metrics: ``{protocol: TaskMetric}``; the first protocol is the default.
        head_options: data-config keys the head needs (``max_depth``).
        display: colour map, a key of :data:`bindense.viz.COLORMAPS` (default from ``kind``: labels /
            probability / scalar; depth and normals name their own).
        vector: the map holds (x, y, z) vectors in the camera frame, re-oriented by flips and rotations.
    """

    name: str
    kind: Kind
    head: str
    channels: int | str
    loss: Callable[[], nn.Module]
    metrics: Mapping[str, TaskMetric]
    head_options: tuple[str, ...] = ()
    display: str = ""
    vector: bool = False

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.metrics:
            raise ValueError(f"{where} needs at least one metric")
        if not self.display:
            object.__setattr__(self, "display", _DEFAULT_DISPLAY[self.kind])

    def out_channels(self, options: Mapping[str, Any]) -> int:
        """Output channels of the head; ``options`` holds the data-config values (``num_classes``, ...)."""
        if isinstance(self.channels, int):
            return self.channels
        value = options.get(self.channels)
        if not value:
            raise ValueError(f"the {self.name} task needs {self.channels}")
        return int(value)

    def metric(self, protocol: str | None = None) -> TaskMetric:
        """The metric of ``protocol`` (None: the default, the first declared)."""
        if protocol is None:
            return next(iter(self.metrics.values()))
        if protocol not in self.metrics:
            raise ValueError(f"unknown {self.name} protocol {protocol!r}; expected one of {list(self.metrics)}")
        return self.metrics[protocol]

    def make_loss(self) -> nn.Module:
        """A fresh default loss module."""
        return self.loss()


def lazy(path: str, **defaults: Any) -> Callable[..., Any]:
    """A factory of the class at import ``path``, imported on the first call, with ``defaults`` bound.

    The built-in tasks name their metrics and losses this way, so that importing the registry imports
    neither (they import it).
    """

    def build(**kwargs: Any) -> Any:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)(**{**defaults, **kwargs})

    build.__qualname__ = build.__name__ = path
    return build


#: every task by name (fill it with :func:`register_task`)
TASKS: Registry[Task] = Registry("task", "data.tasks")


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add ``task`` to the registry (``replace=True`` to redefine a name); returns it."""
    if task.name in TASKS and not replace:
        raise ValueError(f"task {task.name!r} is already registered; pass replace=True to redefine it")
    others = metric_directions(exclude=task.name)
    for spec in task.metrics.values():
        clash = {k: v for k, v in spec.directions.items() if others.get(k, v) != v}
        if clash:
            raise ValueError(f"task {task.name!r}: metric directions {clash} contradict the registered tasks")
    return TASKS.register(task.name, task, replace=True)


def unregister_task(name: str) -> Task:
    """Remove a task from the registry; returns it."""
    return TASKS.unregister(name)


@contextmanager
def registered(task: Task) -> Iterator[Task]:
    """Register ``task`` for the duration of a ``with`` block (tests, notebooks)."""
    register_task(task)
    try:
        yield task
    finally:
        unregister_task(task.name)


def get_task(name: str) -> Task:
    """The registered task ``name``; a clear error names the registered ones."""
    return TASKS.lookup(name)


def task_names() -> tuple[str, ...]:
    """Names of the registered tasks, in registration order."""
    return tuple(TASKS)


def check_tasks(tasks: Any) -> list[str]:
    """``tasks`` as a list of distinct registered names (at least one), else a ValueError."""
    tasks = list(tasks)
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct entries of {list(TASKS)}, got {tasks}")
    for t in tasks:
        get_task(t)
    return tasks


def metric_directions(exclude: str | None = None) -> dict[str, Direction]:
    """``{metric key: "max" | "min"}`` over every registered task's metrics (but task ``exclude``)."""
    out: dict[str, Direction] = {}
    for task in TASKS.values():
        if task.name == exclude:
            continue
        for spec in task.metrics.values():
            out.update(spec.directions)
    return out


# ----------------------------------------------------------------------------- the built-in tasks
_SEG = TaskMetric(lazy("bindense.metrics.SegmentationMetrics"), "mIoU", {"pixAcc": "max", "mIoU": "max"})
_SEG_LOSS = lazy("bindense.lit.losses.SegCrossEntropy")
_DEPTH_EIGEN = {
    **dict.fromkeys(("d1", "d2", "d3"), "max"),
    **dict.fromkeys(("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"), "min"),
}
_NORMALS = {
    **dict.fromkeys(("mean_angle", "median_angle", "rmse_angle"), "min"),
    **dict.fromkeys(("within_11_25", "within_22_5", "within_30"), "max"),
}

register_task(Task("seg", "label", "logits", "num_classes", _SEG_LOSS, {"default": _SEG}))
register_task(Task("parts", "label", "logits", "num_parts", _SEG_LOSS, {"default": _SEG}))
register_task(
    Task(
        "depth",
        "regression",
        "scaled_sigmoid",
        1,
        lazy("bindense.lit.losses.SILogLoss"),
        {
            # d1 under the per-image Eigen protocol (BiDense reports it first); rmse_pooled over all valid
            # pixels of the split (the multi-task protocol)
            "eigen": TaskMetric(lazy("bindense.metrics.DepthMetrics"), "d1", _DEPTH_EIGEN),
            "pooled": TaskMetric(
                lazy("bindense.metrics.PooledDepthRMSE"), "rmse_pooled", {"rmse_pooled": "min", "abs_rel_pooled": "min"}
            ),
        },
        head_options=("max_depth",),
        display="depth",
    )
)
register_task(
    Task(
        "normals",
        "regression",
        "normalized",
        3,
        lazy("bindense.lit.multitask.NormalsL1Loss"),
        {"default": TaskMetric(lazy("bindense.metrics.NormalsMetrics"), "mean_angle", _NORMALS)},
        display="normals",
        vector=True,
    )
)
register_task(
    Task(
        "edge",
        "probability",
        "linear",
        1,
        lazy("bindense.lit.multitask.BinaryMapLoss", pos_weight=0.95),
        {"default": TaskMetric(lazy("bindense.metrics.EdgeMetrics"), "odsF_approx", {"odsF_approx": "max"})},
    )
)
register_task(
    Task(
        "sal",
        "probability",
        "linear",
        1,
        lazy("bindense.lit.multitask.BinaryMapLoss"),
        {"default": TaskMetric(lazy("bindense.metrics.SaliencyMetrics"), "maxF", {"maxF": "max", "mae": "min"})},
    )
)
