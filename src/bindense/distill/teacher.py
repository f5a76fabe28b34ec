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
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

#: prefixes of the net's entries in a LightningModule's state_dict (DenseLitModule uses ``net.``)
NET_PREFIXES = ("net.", "model.")
#: checkpoint entries that may hold the run config (bindense.lit.pipeline.CONFIG_KEY first)
CHECKPOINT_CONFIG_KEYS = ("bindense_config",)
_CONFIG_KEYS = ("cfg", "config", "run_config")


class TeacherCheckpointError(ValueError):
    """The teacher checkpoint is missing, carries no usable config, or does not match its model."""


def _config_from_checkpoint(ckpt: Mapping[str, Any]) -> DictConfig | None:
    """The run config stored in the checkpoint itself (its own entry or the hyper-parameters), if any."""
    for key in CHECKPOINT_CONFIG_KEYS:
        node = ckpt.get(key)
        if isinstance(node, Mapping) and "model" in node:
            return OmegaConf.create(dict(node))
    hp = ckpt.get("hyper_parameters") or {}
    for key in _CONFIG_KEYS:
        node = hp.get(key)
        if isinstance(node, Mapping | DictConfig) and "model" in node:
            return OmegaConf.create(OmegaConf.to_container(OmegaConf.create(dict(node)), resolve=False))
    if "model" in hp and isinstance(hp["model"], Mapping | DictConfig) and "_target_" in hp["model"]:
        return OmegaConf.create({"model": hp["model"]})
    return None


def run_config_paths(ckpt_path: Path) -> list[Path]:
    """Where the run config of a checkpoint may be: its run dir (``checkpoints/..``) or its own dir."""
    out = []
    for run_dir in (ckpt_path.parent.parent, ckpt_path.parent):
        out += [run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"]
    return out


def teacher_config(ckpt_path: str | os.PathLike, ckpt: Mapping[str, Any], config_path: str | None = None) -> DictConfig:
    """The run config (with a ``model`` node) of a checkpoint: explicit path, hyper-parameters, or run dir."""
    ckpt_path = Path(ckpt_path)
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise TeacherCheckpointError(f"teacher config {str(path)!r} (distill.teacher_config) does not exist")
        candidates = [path]
    else:
        from_hp = _config_from_checkpoint(ckpt)
        if from_hp is not None:
            return from_hp
        candidates = [p for p in run_config_paths(ckpt_path) if p.is_file()]
    for path in candidates:
        cfg = OmegaConf.load(path)
        if isinstance(cfg, DictConfig) and "model" in cfg:
            return cfg
    tried = [str(config_path)] if config_path else [str(p) for p in run_config_paths(ckpt_path)]
    raise TeacherCheckpointError(
        f"no run config with a 'model' node found for teacher checkpoint {str(ckpt_path)!r}; looked in the "
        f"checkpoint ({CHECKPOINT_CONFIG_KEYS[0]}, hyper-parameters) and {tried}. Keep the checkpoint inside "
        "its run directory (<run>/checkpoints/*.ckpt next to <run>/config.yaml) or set "
        "distill.teacher_config=<run>/config.yaml"
    )


def net_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The net's entries of a LightningModule state_dict, prefix removed (a bare net state_dict passes)."""
    for prefix in NET_PREFIXES:
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    return dict(state)


def build_net(model_cfg: DictConfig) -> nn.Module:
    """Instantiate a ``model`` config node (``_target_`` + arguments) without loading any weights."""
    import hydra

    node = OmegaConf.to_container(model_cfg, resolve=True)
    if not isinstance(node, dict) or "_target_" not in node:
        raise TeacherCheckpointError(f"the teacher's model config has no _target_: {node}")
    if "pretrained_ckpt" in node:  # the checkpoint holds every weight; the ImageNet file is not needed
        node["pretrained_ckpt"] = None
    return hydra.utils.instantiate(node, _convert_="all")


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

    Raises :class:`TeacherCheckpointError` when the path is unset or missing, the config cannot be found,
    the weights do not match the model the config builds (missing / unexpected keys, shapes), or (with
    ``require_full_precision``) the teacher has binary units.
    """
    if not ckpt_path:
        raise TeacherCheckpointError(
            "distillation needs a teacher: set distill.teacher_ckpt=<teacher run>/checkpoints/last.ckpt "
            "(train one first, e.g. experiment=bimtdp_synthetic_teacher)"
        )
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise TeacherCheckpointError(f"teacher checkpoint {str(path)!r} (distill.teacher_ckpt) does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise TeacherCheckpointError(f"cannot read teacher checkpoint {str(path)!r}: {err}") from err
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise TeacherCheckpointError(f"{str(path)!r} is not a Lightning checkpoint (no 'state_dict' entry)")
    cfg = teacher_config(path, ckpt, config_path)
    net = build_net(cfg.model)
    state = net_state_dict(ckpt["state_dict"])
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: ckpt {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:

        def head(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        raise TeacherCheckpointError(
            f"teacher checkpoint {str(path)!r} does not match the model its config builds "
            f"({cfg.model.get('_target_')}): missing {len(missing)} [{head(missing)}], unexpected "
            f"{len(unexpected)} [{head(unexpected)}], shape mismatches {len(shapes)} [{head(shapes)}]"
        )
    net.load_state_dict(state, strict=True)
    if require_full_precision and not is_full_precision(net):
        raise TeacherCheckpointError(
            f"teacher {str(path)!r} has binary units (method {cfg.get('method', {}).get('name', '?')}); the "
            "teacher must be full precision (or set distill.require_full_precision=false)"
        )
    return freeze(net), cfg
