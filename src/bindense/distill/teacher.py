"""Load a frozen teacher network from a checkpoint of this project.

A bindense run writes ``<run>/checkpoints/{best_*,last}.ckpt`` (Lightning: the net's weights under
``state_dict`` with the prefix ``net.``, the resolved run config under ``bindense_config``) and its config as
``<run>/config.yaml`` (resolved) and ``<run>/.hydra/config.yaml``. The teacher is rebuilt from that config's
``model`` node (its ``_target_`` and the ``method`` it names), loaded strictly, put in eval mode and frozen
(``requires_grad=False``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig
from torch import nn

from bindense.utils.checkpoint import (
    CheckpointError,
    build_net,
    find_run_config,
    load_net_weights,
    read_checkpoint,
)

__all__ = ["freeze", "is_full_precision", "load_teacher", "teacher_config"]

_NAME = "teacher checkpoint (distill.teacher_ckpt)"


def teacher_config(ckpt_path: str | os.PathLike, ckpt: Mapping[str, Any], config_path: str | None = None) -> DictConfig:
    """The run config (with a ``model`` node) of a checkpoint: explicit path, hyper-parameters, or run dir."""
    return find_run_config(
        ckpt_path,
        ckpt,
        config_path,
        name=_NAME,
        hint="Keep the checkpoint inside its run directory (<run>/checkpoints/*.ckpt next to <run>/config.yaml) "
        "or set distill.teacher_config=<run>/config.yaml",
    )


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` for every parameter; returns ``net``."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def is_full_precision(net: nn.Module) -> bool:
    """True when no unit of ``net`` uses 1-bit activations or weights."""
    for m in net.modules():
        if getattr(m, "input_bits", 32) < 32 or getattr(m, "weight_bits", 32) < 32:
            return False
    return True


def load_teacher(
    ckpt_path: str | os.PathLike | None,
    config_path: str | None = None,
    require_full_precision: bool = True,
) -> tuple[nn.Module, DictConfig]:
    """(frozen teacher net in eval mode, its run config) from a bindense checkpoint.

    Raises :class:`CheckpointError` when the path is unset or missing, the config cannot be found,
    the weights do not match the model the config builds (missing / unexpected keys, shapes), or (with
    ``require_full_precision``) the teacher has binary units.
    """
    if not ckpt_path:
        raise CheckpointError(
            "distillation needs a teacher: set distill.teacher_ckpt=<teacher run>/checkpoints/last.ckpt "
            "(train one first, e.g. experiment=bimtdp_synthetic_teacher)"
        )
    path, ckpt = read_checkpoint(ckpt_path, name=_NAME)
    cfg = teacher_config(path, ckpt, config_path)
    net = load_net_weights(build_net(cfg.model), ckpt, path, name=_NAME)
    if require_full_precision and not is_full_precision(net):
        raise CheckpointError(
            f"teacher {str(path)!r} has binary units (method {cfg.get('method', {}).get('name', '?')}); the "
            "teacher must be full precision (or set distill.require_full_precision=false)"
        )
    return freeze(net), cfg
