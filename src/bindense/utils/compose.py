"""Compose the project's Hydra configs from Python: the one way every script, test and notebook does it.

``train.py`` / ``eval.py`` compose through ``@hydra.main``; everything else calls :func:`compose_config`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

#: the repository (an editable install of the repository is assumed) and its conf/ directory
REPO = Path(__file__).resolve().parents[3]
CONF_DIR = REPO / "conf"


def compose_config(
    config_name: str = "train",
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    *,
    hydra_node: bool = True,
) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``, as ``train.py`` / ``eval.py`` would see it.

    ``PROJECT_ROOT`` defaults to the repository (``conf/paths`` reads it), as in the entry points. With
    ``hydra_node`` the Hydra node is kept and registered (so ``${hydra:...}`` interpolations resolve); scripts
    that only build a model or a datamodule pass ``hydra_node=False`` and get the config without it.
    ``output_dir`` replaces ``paths.output_dir`` (a composed config has no Hydra run directory of its own).
    """
    os.environ.setdefault("PROJECT_ROOT", str(REPO))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_node)
    if hydra_node:
        HydraConfig.instance().set_config(cfg)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg
