"""Build the Lightning callbacks and loggers of a config group (``callbacks``, ``logger``)."""

from __future__ import annotations

import logging

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None, kind: str) -> list:
    objects = []
    if not group:
        return objects
    if not isinstance(group, DictConfig):
        raise TypeError(f"the {kind} config must be a mapping of name -> {{_target_: ...}}")
    for name, conf in group.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info("instantiating %s <%s>", kind, conf._target_)
            objects.append(hydra.utils.instantiate(conf))
        elif conf is not None:
            raise ValueError(f"{kind} entry {name!r} has no _target_: {conf}")
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """Every ``{_target_: ...}`` entry of the ``callbacks`` group (null entries are switched off)."""
    return _instantiate_group(cfg, "callback")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Every ``{_target_: ...}`` entry of the ``logger`` group (null entries are switched off)."""
    return _instantiate_group(cfg, "logger")
