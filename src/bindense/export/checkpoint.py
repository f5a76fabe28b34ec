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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bindense.export.packed import build_model_from_config

NET_PREFIXES = ("net.", "model.")
CKPT_CONFIG_KEYS = ("bindense_config",)
HPARAM_CONFIG_KEYS = ("cfg", "config", "run_config")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, has no usable config, or does not match the model its config builds."""


def _plain(node: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=False)
    return node


def resolve_config(cfg: Any) -> dict[str, Any]:
    """A config as plain data with interpolations resolved, top-level node by node; a node that cannot resolve
    outside a Hydra run (``${hydra:...}``) is kept unresolved, except ``model`` and ``method``, which must."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    conf = OmegaConf.create(_plain(cfg))
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


def config_from_checkpoint(ckpt: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run config stored in a checkpoint, if any."""
    for key in CKPT_CONFIG_KEYS:
        node = ckpt.get(key)
        if isinstance(node, Mapping) and "model" in node:
            return dict(node)
    hp = _plain(ckpt.get("hyper_parameters")) or {}
    for key in HPARAM_CONFIG_KEYS:
        node = _plain(hp.get(key))
        if isinstance(node, Mapping) and "model" in node:
            return dict(node)
    if isinstance(hp.get("model"), Mapping) and "_target_" in hp["model"]:
        return {"model": hp["model"]}
    return None


def run_config_candidates(ckpt_path: Path) -> list[Path]:
    """Where a checkpoint's run config may sit: ``<run>/config.yaml``, ``<run>/.hydra/config.yaml`` with
    ``<run>`` the parent of ``checkpoints/`` (or the checkpoint's own directory)."""
    names = ("config.yaml", ".hydra/config.yaml")
    return [d / name for d in (ckpt_path.parent.parent, ckpt_path.parent) for name in names]


def find_config(ckpt_path: Path, ckpt: Mapping[str, Any], config_path: str | os.PathLike | None = None) -> dict:
    from omegaconf import OmegaConf

    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise CheckpointError(f"config file {str(path)!r} does not exist")
        return resolve_config(OmegaConf.load(path))
    stored = config_from_checkpoint(ckpt)
    if stored is not None:
        return resolve_config(stored)
    for path in run_config_candidates(ckpt_path):
        if path.is_file():
            cfg = OmegaConf.load(path)
            if "model" in cfg:
                return resolve_config(cfg)
    raise CheckpointError(
        f"no run config with a 'model' node for {str(ckpt_path)!r}: looked in the checkpoint "
        f"({', '.join(CKPT_CONFIG_KEYS)}, hyper_parameters) and {[str(p) for p in run_config_candidates(ckpt_path)]}; "
        "pass config_path=<run>/config.yaml"
    )


def net_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The net's entries of a LightningModule ``state_dict`` without their prefix (a bare net's passes as is)."""
    for prefix in NET_PREFIXES:
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    return dict(state)


def load_checkpoint_model(
    ckpt_path: str | os.PathLike, config_path: str | os.PathLike | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """``(net in eval mode, resolved run config)`` from a Lightning checkpoint of this project."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {err}") from err
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise CheckpointError(f"{str(path)!r} is not a Lightning checkpoint (no 'state_dict' entry)")
    config = find_config(path, ckpt, config_path)
    model = build_model_from_config(config)
    try:
        model.load_state_dict(net_state_dict(ckpt["state_dict"]), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{str(path)!r} does not match the model its config builds: {err}") from err
    return model.eval(), config
