"""Multi-task gain delta_m over single-task baselines, and the direction of every metric key."""

from __future__ import annotations

from collections.abc import Mapping, Set

import torch

from bindense.metrics.tasks import MTL_METRIC
from bindense.tasks import metric_directions

Number = float | int | torch.Tensor


def _basename(key: str) -> str:
    """`val/depth/rmse_pooled` -> `rmse_pooled`."""
    return key.rsplit("/", 1)[-1]


def metric_direction(key: str) -> str:
    """Return "min" or "max" for a metric key (a bare name or a `stage/task/name` path), as the registered
    tasks declare it (:func:`bindense.tasks.metric_directions`); ``delta_m`` is "max"."""
    name = _basename(key)
    directions = {**metric_directions(), MTL_METRIC[0]: MTL_METRIC[1]}
    if name in directions:
        return directions[name]
    raise KeyError(f"no known direction for metric {key!r}; pass lower_is_better explicitly")


def _is_lower(key: str, lower_is_better: Set[str] | Mapping[str, bool] | None) -> bool:
    if lower_is_better is None:
        return metric_direction(key) == "min"
    name = _basename(key)
    if isinstance(lower_is_better, Mapping):
        return bool(lower_is_better.get(key, lower_is_better.get(name, False)))
    return key in lower_is_better or name in lower_is_better


def delta_m(
    metrics: Mapping[str, Number],
    baselines: Mapping[str, Number],
    lower_is_better: Set[str] | Mapping[str, bool] | None = None,
) -> float:
    """Multi-task gain in percent: (1/T) sum_t (-1)^{l_t} (M_t - S_t) / S_t * 100.

    The sum runs over the keys of ``baselines`` (S_t); each must be in ``metrics`` (M_t) with the same
    units (the ratio is unit-free, but a fraction must not be compared with a percentage). l_t = 1 when
    the key is lower-is-better: by default its last `/` component is looked up by :func:`metric_direction`,
    unknown keys raising; a set or a {key: bool}
    mapping overrides that (keys absent from it count as higher-is-better).
    """
    if not baselines:
        raise ValueError("delta_m needs at least one baseline metric")
    missing = [k for k in baselines if k not in metrics]
    if missing:
        raise KeyError(f"metrics lack baseline keys {missing}; have {sorted(metrics)}")
    total = 0.0
    for key, base in baselines.items():
        s, m = float(base), float(metrics[key])
        if s == 0:
            raise ValueError(f"baseline of {key!r} is 0: relative gain undefined")
        sign = -1.0 if _is_lower(key, lower_is_better) else 1.0
        total += sign * (m - s) / s * 100.0
    return total / len(baselines)


def flatten_metrics(metrics: Mapping[str, object], sep: str = "/") -> dict[str, float]:
    """{task: {name: v}} (any depth) -> {"task/name": float(v)}; flat mappings pass through."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out.update({f"{key}{sep}{k}": v for k, v in flatten_metrics(value, sep).items()})
        else:
            out[key] = float(value)  # type: ignore[arg-type]
    return out


class MultiTaskDelta:
    """delta_m against fixed single-task baselines (e.g. from config) for repeated evaluation.

    ``MultiTaskDelta({"seg/mIoU": 0.41, "depth/rmse_pooled": 0.61})({"seg": seg_out, "depth": d_out})``
    accepts flat ``{"task/name": value}`` or nested ``{task: {name: value}}`` metrics.
    """

    def __init__(
        self,
        baselines: Mapping[str, Number],
        lower_is_better: Set[str] | Mapping[str, bool] | None = None,
    ) -> None:
        self.baselines = {k: float(v) for k, v in baselines.items()}
        self.lower_is_better = lower_is_better
        delta_m(self.baselines, self.baselines, lower_is_better)  # validate keys and zeros early

    def __call__(self, metrics: Mapping[str, object]) -> float:
        return delta_m(flatten_metrics(metrics), self.baselines, self.lower_is_better)
