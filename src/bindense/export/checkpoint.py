"""Rebuild the trained net of a Lightning checkpoint of this project, with its run config.

A bindense run writes ``<run>/checkpoints/*.ckpt`` whose ``state_dict`` holds the net under the prefix ``net.``
(``model.`` is accepted too) and whose ``bindense_config`` entry holds the resolved run config; the run directory
also has ``config.yaml`` (resolved) and ``.hydra/config.yaml``. The config is looked up in that order: an
explicit file, the checkpoint (``bindense_config``, then ``hyper_parameters`` entries with a ``model`` node), the
run directory. Its ``model`` node is instantiated and the weights are loaded strictly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from bindense.export.packed import build_model_from_config
from bindense.utils.checkpoint import (
    CHECKPOINT_CONFIG_KEYS as CKPT_CONFIG_KEYS,
)
from bindense.utils.checkpoint import (
    HPARAM_CONFIG_KEYS,
    NET_PREFIXES,
    config_from_checkpoint,
    find_run_config,
    load_net_weights,
    net_state_dict,
    plain,
    read_checkpoint,
)
from bindense.utils.checkpoint import CheckpointError as _BaseCheckpointError
from bindense.utils.checkpoint import run_config_paths as run_config_candidates

__all__ = [
    "CKPT_CONFIG_KEYS",
    "HPARAM_CONFIG_KEYS",
    "NET_PREFIXES",
    "CheckpointError",
    "config_from_checkpoint",
    "find_config",
    "load_checkpoint_model",
    "net_state_dict",
    "resolve_config",
    "run_config_candidates",
]


class CheckpointError(_BaseCheckpointError):
    """A checkpoint cannot be read, has no usable config, or does not match the model its config builds."""


def resolve_config(cfg: Any) -> dict[str, Any]:
    """A config as plain data with interpolations resolved, top-level node by node; a node that cannot resolve
    outside a Hydra run (``${hydra:...}``) is kept unresolved, except ``model`` and ``method``, which must."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    conf = OmegaConf.create(plain(cfg))
    raw = OmegaConf.to_container(conf, resolve=False)
    out: dict[str, Any] = {}
    for key in raw:
        if key == "hydra":
            continue
        try:
            value = conf[key]
            out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except OmegaConfBaseException as err:
            if key in ("model", "method"):
                raise CheckpointError(f"the run config's {key!r} node does not resolve: {err}") from err
            out[key] = raw[key]
    return out


def find_config(ckpt_path: os.PathLike, ckpt: Mapping[str, Any], config_path: str | os.PathLike | None = None) -> dict:
    """The resolved run config of a checkpoint (see :func:`bindense.utils.checkpoint.find_run_config`)."""
    return resolve_config(find_run_config(ckpt_path, ckpt, config_path, error=CheckpointError))


def load_checkpoint_model(
    ckpt_path: str | os.PathLike, config_path: str | os.PathLike | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """``(net in eval mode, resolved run config)`` from a Lightning checkpoint of this project."""
    path, ckpt = read_checkpoint(ckpt_path, error=CheckpointError)
    config = find_config(path, ckpt, config_path)
    model = load_net_weights(build_model_from_config(config), ckpt, path, error=CheckpointError)
    return model.eval(), config
