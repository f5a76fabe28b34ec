"""Complexity table of a configured model: params by bit-width, paper-rule params, memory, MACs, BOPs, OPs.

Usage (Hydra overrides of conf/train.yaml; only the model is built, no data is read):

    python scripts/complexity.py experiment=bidense_ade20k
    python scripts/complexity.py model.width=tiny model.num_classes=151 method=fp32 complexity.input_size=[480,480]

Script options (``complexity.<key>=value``, no ``+`` needed):
    input_size   [H, W] of the input (default: the config's ``complexity.input_size`` (experiments set it),
                 else the data config's crop size, else 480x480)
    group_depth  aggregate the table rows by this many name components (default: one row per layer)
    device       ``meta`` (shapes only, instant; default) or ``cpu`` (a real forward pass)

The table goes first; the LAST line of stdout is one JSON object with the totals.
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from bindense.analysis.complexity import summarize
from bindense.utils.compose import compose_config

SIZE_KEYS = ("crop_size", "input_size", "image_size", "img_size", "size")
DEFAULT_SIZE = (480, 480)


def data_input_size(cfg: DictConfig) -> tuple[int, int] | None:
    """The (H, W) a data config trains on, from the first of :data:`SIZE_KEYS` it defines."""
    data = cfg.get("data") or {}
    for key in SIZE_KEYS:
        value = OmegaConf.select(data, key, default=None) if isinstance(data, DictConfig) else data.get(key)
        if value is None:
            continue
        if isinstance(value, ListConfig):
            value = OmegaConf.to_container(value)
        if isinstance(value, int):
            return value, value
        if isinstance(value, list | tuple) and len(value) == 2:
            return int(value[0]), int(value[1])
    return None


def main(argv: list[str]) -> None:
    own = [a for a in argv if a.startswith("complexity.")]
    overrides = [a for a in argv if not a.startswith("complexity.")]
    cfg = compose_config("train", overrides, hydra_node=False)
    cli = OmegaConf.from_dotlist([a.removeprefix("complexity.") for a in own])
    section = cfg.get("complexity") or {}
    if isinstance(section, DictConfig):
        section = OmegaConf.to_container(section, resolve=True)
    opts = OmegaConf.merge(section, cli)  # command line > the config's `complexity` section
    model = hydra.utils.instantiate(cfg.model)
    size = opts.get("input_size") or data_input_size(cfg) or DEFAULT_SIZE
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    report = summarize(model, size, device=opts.get("device", "meta"))
    method = cfg.get("method") or {}
    print(
        f"model: {cfg.model.get('decoder')} + {cfg.model.get('backbone')} ({cfg.model.get('width')}), "
        f"method: {method.get('name')} (layout {method.get('layout')}, activation {method.get('activation')}, "
        f"weight {method.get('weight')}, bypass {method.get('bypass')})"
    )
    print(report.table(group_depth=opts.get("group_depth")))
    summary = {"method": method.get("name"), "width": cfg.model.get("width"), **report.totals()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
