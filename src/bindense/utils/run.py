"""Helpers of one run: up-front config checks, run files (config, complexity, summary), final report."""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value that cannot work, found before any training."""


def apply_extras(cfg: DictConfig) -> None:
    """Optional niceties of ``cfg.extras``: silence third-party warnings, print the config tree."""
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    if extras.get("print_config"):
        print_config_tree(cfg)


@rank_zero_only
def print_config_tree(cfg: DictConfig) -> None:
    """The resolved config as a rich tree, main groups first."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", guide_style="dim")
    order = ["data", "model", "method", "module", "trainer", "callbacks", "logger", "paths"]
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)


# --------------------------------------------------------------------------------- checks
def check_config(cfg: DictConfig) -> None:
    """Static checks that need no data or model: every user-facing number is valid (one pass,
    :mod:`bindense.utils.validate`), the monitored metric (filled in when null) names a configured task."""
    from bindense.utils.validate import resolve_monitor, validate_config

    validate_config(cfg)
    tasks = list(cfg.data.get("tasks") or [])
    if not tasks:
        raise ConfigError(f"data config {cfg.data.get('name')!r} lists no tasks")
    resolve_monitor(cfg)
    mode = cfg.get("optimized_mode", "max")
    if mode not in ("max", "min"):
        raise ConfigError(f"optimized_mode must be 'max' or 'min', got {mode!r}")
    tasks = list(cfg.data.get("tasks") or [])
    if not tasks:
        raise ConfigError(f"data config {cfg.data.get('name')!r} lists no tasks")
    metric = cfg.get("optimized_metric")
    if metric:
        parts = str(metric).split("/")
        if len(parts) != 3 or parts[0] != "val" or parts[1] not in [*tasks, "mtl"]:
            raise ConfigError(
                f"optimized_metric={metric!r} must be 'val/<task>/<metric>' with <task> one of {tasks}, "
                f"e.g. 'val/{tasks[0]}/..._best'"
            )


def check_test_split(cfg: DictConfig, split: str | None) -> None:
    """Refuse the test split of a dataset that has none (it would silently be the val split, logged as test/)."""
    if split != "test" or cfg.data.get("test_split"):
        return
    splits = {k: cfg.data.get(f"{k}_split") for k in ("train", "val")}
    listed = ", ".join(f"{k}={v!r}" for k, v in splits.items())
    raise ConfigError(
        f"data {cfg.data.get('name')!r} has no test split (its splits: {listed}); evaluate with split=val, or "
        f"name a test split with data.test_split=<split>"
    )


def cpu_fallback(cfg: DictConfig) -> None:
    """``trainer.accelerator: gpu`` (every paper experiment) on a machine without a GPU: run on the CPU instead,
    with one warning, rather than failing in Lightning's accelerator lookup."""
    trainer = cfg.get("trainer") or {}
    if str(trainer.get("accelerator")) not in ("gpu", "cuda") or _gpu_available():
        return
    changes: dict[str, Any] = {"accelerator": "cpu", "devices": 1}
    if trainer.get("strategy") not in (None, "auto"):
        changes["strategy"] = "auto"
    if trainer.get("sync_batchnorm"):
        changes["sync_batchnorm"] = False
    if str(trainer.get("precision")) in ("16", "16-mixed", "16-true"):
        changes["precision"] = 32
    with open_dict(cfg):
        for key, value in changes.items():
            cfg.trainer[key] = value
    log.warning(
        "no GPU on this machine: running on the CPU instead (%s). Add trainer=cpu to choose it yourself.",
        ", ".join(f"trainer.{k}={v}" for k, v in changes.items()),
    )


def _gpu_available() -> bool:
    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def check_monitors(cfg: DictConfig, module: Any, callbacks: Iterable[Any]) -> None:
    """Every monitored key (optimized_metric, checkpoint / early-stopping monitors) will be logged."""
    allowed = set(module.monitor_keys())
    wanted = {"optimized_metric": cfg.get("optimized_metric")}
    for cb in callbacks:
        if getattr(cb, "monitor", None):
            wanted[type(cb).__name__] = cb.monitor
    for where, key in wanted.items():
        if key and key not in allowed:
            raise ConfigError(f"{where} monitors {key!r}, which this run never logs; choose one of {sorted(allowed)}")


def check_datamodule(dm: Any, stage: str = "fit") -> None:
    """Prepare and set up the data of ``stage`` now, so a missing or malformed dataset fails early."""
    dm.prepare_data()
    dm.setup(stage)


# --------------------------------------------------------------------------------- run files
@rank_zero_only
def save_config(cfg: DictConfig, out_dir: Path) -> Path:
    """``config.yaml``: the fully resolved config of this run (Hydra's .hydra/ keeps the unresolved one)."""
    path = Path(out_dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(resolved_container(cfg)))
    return path


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain python objects, without the ``hydra`` node."""
    return {
        str(k): OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        for k in cfg
        if k != "hydra"
    }


def complexity_input_size(cfg: DictConfig) -> tuple[int, int]:
    """(H, W) for the complexity summary: ``complexity.input_size`` or the data crop size."""
    size = (cfg.get("complexity") or {}).get("input_size") or cfg.data.get("crop_size")
    if size is None:
        raise ConfigError("set complexity.input_size (or data.crop_size) for the complexity summary")
    if isinstance(size, int):
        return int(size), int(size)
    h, w = list(size)
    return int(h), int(w)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@rank_zero_only
def write_complexity(
    net: torch.nn.Module, input_size: tuple[int, int], out_dir: Path, loggers: Iterable[Logger] = ()
) -> dict[str, Any]:
    """``complexity.json`` and ``complexity.txt`` (bindense.analysis.complexity), logged to W&B as tables
    (``complexity``: the totals; ``complexity/layers``: one row per layer)."""
    from bindense.analysis.complexity import summarize

    report = summarize(net, (1, 3, *input_size))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    totals = _jsonable(report.totals())
    (out_dir / "complexity.json").write_text(json.dumps(totals, indent=2))
    (out_dir / "complexity.txt").write_text(report.table() + "\n")
    rows = [[k, float(v)] for k, v in totals.items() if isinstance(v, int | float)]
    layer_columns = ["layer", "kind", "a/w bits", "fp params", "1b params", "buffers", "fp MACs", "1b MACs", "calls"]
    layers = [
        [r.name, r.kind, r.bits, r.params_fp, r.params_binary, r.buffers, r.macs_fp, r.macs_binary, r.calls]
        for r in report.rows
    ]
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key="complexity", columns=["quantity", "value"], data=rows)
            logger.log_table(key="complexity/layers", columns=layer_columns, data=layers)
            logger.experiment.summary.update({f"complexity/{k}": v for k, v in totals.items()})
    return totals


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Trainer metrics (tensors) -> sorted ``{key: float}``."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value)
        elif isinstance(value, int | float):
            out[key] = float(value)
    return dict(sorted(out.items()))


@rank_zero_only
def write_summary(out_dir: Path, summary: Mapping[str, Any]) -> Path:
    """``summary.json``: where every file of the run is, final and best metrics, complexity, status."""
    path = Path(out_dir) / "summary.json"
    path.write_text(json.dumps(_jsonable(dict(summary)), indent=2))
    return path


@rank_zero_only
def print_summary(summary: Mapping[str, Any]) -> None:
    """A rich table of what the run produced and where it is."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bindense run: {summary.get('status', '?')}", show_header=False, expand=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in summary.get("files", {}).items():
        if value:
            table.add_row(key, str(value))
    for key, value in summary.get("highlights", {}).items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
