"""Read Lightning checkpoints of this project: the file, its run config, the net's weights, the net itself.

A bindense run writes ``<run>/checkpoints/*.ckpt`` whose ``state_dict`` holds the net under the prefix ``net.``
(``model.`` is accepted too) and whose ``bindense_config`` entry holds the resolved run config; the run directory
also has ``config.yaml`` (resolved) and ``.hydra/config.yaml``. The config is looked up in that order: an
explicit file, the checkpoint (``bindense_config``, then ``hyper_parameters`` entries with a ``model`` node), the
run directory. The config's ``model`` node is instantiated and the weights are loaded strictly. Every failure
raises :class:`CheckpointError`; callers pass a ``name`` for the checkpoint in messages (e.g. the teacher of
:mod:`bindense.distill.teacher`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

#: prefixes of the net's entries in a LightningModule's state_dict (DenseLitModule uses ``net.``)
NET_PREFIXES = ("net.", "model.")
#: checkpoint entry holding the resolved config of the run that wrote it (written by bindense.lit.pipeline)
CONFIG_KEY = "bindense_config"
#: hyper-parameter entries that may hold the run config
HPARAM_CONFIG_KEYS = ("cfg", "config", "run_config")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, has no usable config, or does not match the model its config builds."""


def plain(node: Any) -> Any:
    """An OmegaConf node as plain containers (unresolved); anything else as is."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=False)
    return node


def read_checkpoint(path: str | os.PathLike, *, name: str = "checkpoint") -> tuple[Path, Mapping[str, Any]]:
    """``(expanded path, loaded checkpoint)``; :class:`CheckpointError` when the file is missing, unreadable or
    not Lightning's."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{name} {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"cannot read {name} {str(path)!r}: {err}") from err
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise CheckpointError(f"{str(path)!r} is not a Lightning checkpoint (no 'state_dict' entry)")
    return path, ckpt


def config_from_checkpoint(ckpt: Mapping[str, Any]) -> DictConfig | None:
    """The run config stored in the checkpoint itself (its own entry or the hyper-parameters), if any."""
    node = plain(ckpt.get(CONFIG_KEY))
    if isinstance(node, Mapping) and "model" in node:
        return OmegaConf.create(dict(node))
    hp = plain(ckpt.get("hyper_parameters")) or {}
    for key in HPARAM_CONFIG_KEYS:
        node = plain(hp.get(key))
        if isinstance(node, Mapping) and "model" in node:
            return OmegaConf.create(dict(node))
    model = plain(hp.get("model"))
    if isinstance(model, Mapping) and "_target_" in model:
        return OmegaConf.create({"model": dict(model)})
    return None


def run_config_paths(ckpt_path: Path) -> list[Path]:
    """Where a checkpoint's run config may sit: ``<run>/config.yaml``, ``<run>/.hydra/config.yaml`` with
    ``<run>`` the parent of ``checkpoints/`` (or the checkpoint's own directory)."""
    names = ("config.yaml", ".hydra/config.yaml")
    return [d / n for d in (Path(ckpt_path).parent.parent, Path(ckpt_path).parent) for n in names]


def find_run_config(
    ckpt_path: str | os.PathLike,
    ckpt: Mapping[str, Any],
    config_path: str | os.PathLike | None = None,
    *,
    name: str = "checkpoint",
    hint: str = "pass config_path=<run>/config.yaml",
) -> DictConfig:
    """The (unresolved) run config with a ``model`` node: explicit file, the checkpoint, or the run directory."""
    ckpt_path = Path(ckpt_path)
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise CheckpointError(f"config file {str(path)!r} for {name} {str(ckpt_path)!r} does not exist")
        candidates = [path]
    else:
        stored = config_from_checkpoint(ckpt)
        if stored is not None:
            return stored
        candidates = [p for p in run_config_paths(ckpt_path) if p.is_file()]
    for path in candidates:
        cfg = OmegaConf.load(path)
        if isinstance(cfg, DictConfig) and "model" in cfg:
            return cfg
    tried = [str(config_path)] if config_path else [str(p) for p in run_config_paths(ckpt_path)]
    raise CheckpointError(
        f"no run config with a 'model' node found for {name} {str(ckpt_path)!r}; looked in the checkpoint "
        f"({CONFIG_KEY}, hyper-parameters) and {tried}. {hint}"
    )


def net_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The net's entries of a LightningModule state_dict, prefix removed (a bare net state_dict passes)."""
    for prefix in NET_PREFIXES:
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    return dict(state)


#: model targets of earlier versions, stored in older runs' configs -> (today's target, arguments it implied)
LEGACY_MODEL_TARGETS: dict[str, tuple[str, dict[str, Any]]] = {
    "bindense.models.multitask.build_multitask_model": ("bindense.models.build_model", {"shared_decoder": False}),
}


def build_net(model_cfg: Any) -> nn.Module:
    """Instantiate a ``model`` config node (``_target_`` + arguments) without loading any weights; a
    ``pretrained_ckpt`` argument is set to None (the checkpoint holds every weight). Targets of earlier
    versions (:data:`LEGACY_MODEL_TARGETS`) are mapped to today's builder."""
    import hydra

    node = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else model_cfg
    node = dict(node) if isinstance(node, Mapping) else node
    if not isinstance(node, dict) or "_target_" not in node:
        raise CheckpointError(f"the model config has no _target_: {node}")
    if node["_target_"] in LEGACY_MODEL_TARGETS:
        target, implied = LEGACY_MODEL_TARGETS[node["_target_"]]
        node = {**node, **implied, "_target_": target}
    if "pretrained_ckpt" in node:
        node["pretrained_ckpt"] = None
    return hydra.utils.instantiate(node, _convert_="all")


def load_net_weights(
    net: nn.Module,
    ckpt: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    name: str = "checkpoint",
) -> nn.Module:
    """Load the checkpoint's net weights into ``net`` strictly; :class:`CheckpointError` listing missing /
    unexpected keys and shape mismatches when they do not match. Returns ``net``."""
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

        raise CheckpointError(
            f"{name} {str(path)!r} does not match the model its config builds ({type(net).__name__}): "
            f"missing {len(missing)} [{head(missing)}], unexpected {len(unexpected)} [{head(unexpected)}], "
            f"shape mismatches {len(shapes)} [{head(shapes)}]"
        )
    net.load_state_dict(state, strict=True)
    return net


def resolve_config(cfg: Any) -> dict[str, Any]:
    """A config as plain data with interpolations resolved, top-level node by node; a node that cannot resolve
    outside a Hydra run (``${hydra:...}``) is kept unresolved, except ``model`` and ``method``, which must."""
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


def load_checkpoint_model(
    ckpt_path: str | os.PathLike, config_path: str | os.PathLike | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """``(net in eval mode, resolved run config)`` from a Lightning checkpoint of this project."""
    from bindense.export.packed import build_model_from_config  # export builds on this module, not the reverse

    path, ckpt = read_checkpoint(ckpt_path)
    config = resolve_config(find_run_config(path, ckpt, config_path))
    model = load_net_weights(build_model_from_config(config), ckpt, path)
    return model.eval(), config
