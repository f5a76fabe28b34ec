"""One validation pass over the composed config, before anything is built (docs/RELIABILITY.md).

:data:`RULES` maps each user-facing numeric setting to what it must be; :func:`validate_config` checks them all
and raises one :class:`~bindense.utils.run.ConfigError` that names every bad key, its value and what is
expected. ``optimized_metric: null`` / ``optimized_mode: null`` are filled in from the data's first task
(:func:`resolve_monitor`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from bindense.metrics import main_metric
from bindense.tasks import metric_directions, task_names


@dataclass(frozen=True)
class Rule:
    """``check(value)`` must hold; ``expected`` says what a valid value is; ``nullable`` allows null."""

    check: Callable[[Any], bool]
    expected: str
    nullable: bool = False


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _pair(v: Any) -> bool:
    return isinstance(v, list | tuple | ListConfig) and len(v) == 2 and all(_int(x) and x > 0 for x in v)


def _ints(v: Any) -> bool:
    return isinstance(v, list | tuple | ListConfig) and len(v) > 0 and all(_int(x) and x > 0 for x in v)


POSITIVE_INT = Rule(lambda v: _int(v) and v >= 1, "an integer >= 1")
NONNEG_INT = Rule(lambda v: _int(v) and v >= 0, "an integer >= 0")
POSITIVE = Rule(lambda v: _num(v) and v > 0, "a finite number > 0")
NONNEG = Rule(lambda v: _num(v) and v >= 0, "a finite number >= 0")
SIZE = Rule(_pair, "[height, width], two integers >= 1")

#: config key (``*`` matches one level) -> rule; keys absent from a config are skipped
RULES: dict[str, Rule] = {
    "data.batch_size": POSITIVE_INT,
    "data.eval_batch_size": Rule(POSITIVE_INT.check, POSITIVE_INT.expected, nullable=True),
    "data.num_workers": NONNEG_INT,
    "data.crop_size": Rule(SIZE.check, SIZE.expected, nullable=True),
    "data.num_classes": Rule(POSITIVE_INT.check, POSITIVE_INT.expected, nullable=True),
    "data.verify": Rule(lambda v: v in ("none", "quick", "full"), "one of 'quick', 'full', 'none'"),
    "data.synthetic.num_train": POSITIVE_INT,
    "data.synthetic.num_val": POSITIVE_INT,
    "data.synthetic.height": POSITIVE_INT,
    "data.synthetic.width": POSITIVE_INT,
    "trainer.max_epochs": Rule(lambda v: _int(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1: no limit)"),
    "trainer.min_epochs": Rule(NONNEG_INT.check, NONNEG_INT.expected, nullable=True),
    "trainer.accumulate_grad_batches": POSITIVE_INT,
    "trainer.gradient_clip_val": Rule(NONNEG.check, NONNEG.expected, nullable=True),
    "module.optimizer.lr": POSITIVE,
    "module.optimizer.weight_decay": NONNEG,
    "module.loss_weights.*": NONNEG,
    "model.width": Rule(lambda v: v in ("tiny", "nano"), "one of 'tiny' (paper size), 'nano' (CPU size)"),
    "model.dims": Rule(_ints, "a list of integers >= 1", nullable=True),
    "model.head_hidden": Rule(POSITIVE_INT.check, POSITIVE_INT.expected, nullable=True),
    "complexity.input_size": Rule(lambda v: _pair(v) or (_int(v) and v > 0), "[height, width] or one size", True),
}

_ABSENT = object()


def _values(cfg: DictConfig, pattern: str) -> dict[str, Any]:
    """``{key: value}`` of the keys ``pattern`` names in ``cfg`` (``a.b.*``: every child of ``a.b``)."""
    if not pattern.endswith(".*"):
        value = OmegaConf.select(cfg, pattern, default=_ABSENT)
        return {} if value is _ABSENT else {pattern: value}
    parent = OmegaConf.select(cfg, pattern[:-2], default=None)
    if not isinstance(parent, DictConfig):
        return {}
    return {f"{pattern[:-2]}.{k}": parent[k] for k in parent}


def config_problems(cfg: DictConfig) -> list[str]:
    """``key=value: expected ...`` for every setting that breaks its rule."""
    problems = []
    for pattern, rule in RULES.items():
        for key, value in _values(cfg, pattern).items():
            if value is None and rule.nullable:
                continue
            if not rule.check(value):
                shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
                problems.append(f"{key}={shown!r}: expected {rule.expected}")
    return problems


def validate_config(cfg: DictConfig) -> None:
    """Raise one ConfigError naming every bad user-facing setting (key, value, what is expected)."""
    from bindense.utils.run import ConfigError

    problems = config_problems(cfg)
    if problems:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))


def default_monitor(cfg: DictConfig) -> tuple[str, str]:
    """(``val/<task>/<main metric>_best``, mode) of the data's first task."""
    task = str(list(cfg.data.tasks)[0])
    protocol = OmegaConf.select(cfg, f"module.metrics.{task}.protocol", default=None) or "eigen"
    name, mode = main_metric(task, protocol) if task == "depth" else main_metric(task)
    return f"val/{task}/{name}_best", mode


def resolve_monitor(cfg: DictConfig) -> None:
    """Fill ``optimized_metric: null`` with the main metric of the data's first task, and ``optimized_mode:
    null`` with the direction of the monitored key: ``min`` for a loss, else the direction its task registers for
    that metric (``val/depth/rmse_pooled_best`` -> ``min``)."""
    if "optimized_metric" not in cfg:
        return
    key, mode = default_monitor(cfg)
    with open_dict(cfg):
        if cfg.get("optimized_metric") is None:
            cfg.optimized_metric = key
        elif cfg.get("optimized_mode") is None:
            parts = str(cfg.optimized_metric).split("/")
            if parts[-1].endswith("loss"):
                mode = "min"
            elif len(parts) == 3 and parts[1] in task_names():
                mode = metric_directions().get(parts[2].removesuffix("_best"), main_metric(parts[1])[1])
            elif len(parts) == 3 and parts[1] == "mtl":
                mode = main_metric("mtl")[1]
        if cfg.get("optimized_mode") is None:
            cfg.optimized_mode = mode
