"""Compose the project's Hydra configs from Python (tests, notebooks) the way the entry points do."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

#: the repository's conf/ directory (an editable install of the repository is assumed)
CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def compose_config(
    config_name: str = "train",
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``, as ``train.py`` / ``eval.py`` would see it.

    The Hydra node is kept and registered (so ``${hydra:...}`` interpolations resolve); ``output_dir``
    replaces ``paths.output_dir`` (a composed config has no Hydra run directory of its own).
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg
