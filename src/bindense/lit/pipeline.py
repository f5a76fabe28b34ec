"""What ``train.py`` and ``eval.py`` run: build data, model, module, trainer from a composed config.

``train(cfg)`` and ``evaluate(cfg)`` are plain functions of a Hydra config, so tests call them on a
``hydra.compose`` result exactly as the entry points do.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from bindense.lit.callbacks import InterruptGuard, PredictionPanels
from bindense.utils.checkpoint import CONFIG_KEY
from bindense.utils.instantiate import instantiate_callbacks, instantiate_loggers
from bindense.utils.run import (
    ConfigError,
    check_config,
    check_datamodule,
    check_monitors,
    check_test_split,
    complexity_input_size,
    cpu_fallback,
    print_summary,
    resolved_container,
    save_config,
    scalar_metrics,
    write_complexity,
    write_summary,
)
from bindense.utils.rundir import refuse_finished_run
from bindense.utils.wandb import finish_wandb, prepare_wandb, start_wandb

log = logging.getLogger(__name__)

#: config groups that must match between a checkpoint and the config evaluating it
MODEL_KEYS = ("model", "method")
#: keys of those groups that only matter at initialisation
INIT_ONLY_KEYS = ("pretrained_ckpt",)


def build_datamodule(cfg: DictConfig, stage: str = "fit") -> L.LightningDataModule:
    """Instantiate ``cfg.data`` and set up ``stage`` at once, so a missing dataset fails before training."""
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")  # plain hparams: checkpoints load weights_only
    check_datamodule(dm, stage)
    return dm


def build_module(cfg: DictConfig) -> LightningModule:
    """The net (``cfg.model``) inside its LightningModule (``cfg.module``), with its distiller if any.

    A ``distill`` config with ``enabled: true`` provides ``distiller`` (a Hydra node, e.g.
    :class:`bindense.distill.Distiller`); it is instantiated and passed as the module's ``distiller``
    constructor argument.
    """
    net = hydra.utils.instantiate(cfg.model)
    distill = cfg.get("distill") or {}
    if not distill.get("enabled"):
        return hydra.utils.instantiate(cfg.module, net=net)
    if distill.get("distiller") is None:
        raise ConfigError("distill.enabled is true but distill.distiller is not set (see conf/distill/feature.yaml)")
    distiller = hydra.utils.instantiate(distill.distiller, _convert_="all")
    return hydra.utils.instantiate(cfg.module, net=net, distiller=distiller)


class StoreConfig(Callback):
    """Put the resolved run config into every checkpoint (``checkpoint[CONFIG_KEY]``) for eval.py's check."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


def _output_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _log_hyperparameters(cfg: DictConfig, module: LightningModule, trainer: Trainer) -> None:
    if not trainer.loggers:
        return
    hparams = resolved_container(cfg)
    net = getattr(module, "net", module)
    hparams["model/params_total"] = sum(p.numel() for p in net.parameters())
    hparams["model/params_trainable"] = sum(p.numel() for p in net.parameters() if p.requires_grad)
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)


def _file_locations(out: Path, trainer: Trainer | None) -> dict[str, str | None]:
    files: dict[str, str | None] = {"run_dir": str(out), "config": str(out / "config.yaml")}
    ckpt = trainer.checkpoint_callback if trainer is not None else None
    if isinstance(ckpt, ModelCheckpoint):
        files["best_checkpoint"] = ckpt.best_model_path or None
        files["last_checkpoint"] = ckpt.last_model_path or None
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, CSVLogger):
            files["metrics_csv"] = str(Path(logger.log_dir) / "metrics.csv")
        elif isinstance(logger, WandbLogger):
            run_dir = getattr(logger.experiment, "dir", None)  # a dummy on ranks > 0
            files["wandb_run"] = str(Path(run_dir).parent) if isinstance(run_dir, str) else None
    for name in ("complexity.json", "complexity.txt", "metrics.json"):
        if (out / name).exists():
            files[name.replace(".", "_")] = str(out / name)
    for cb in trainer.callbacks if trainer is not None else []:
        if isinstance(cb, PredictionPanels) and cb.last_path is not None:
            files["panels"] = str(cb.dirpath)
    return files


def train(cfg: DictConfig, extra_callbacks: list[Callback] | None = None) -> tuple[dict[str, float], dict]:
    """Fit (and optionally test) the configured model; returns (metrics, objects).

    Writes under ``cfg.paths.output_dir``: ``config.yaml``, ``checkpoints/`` (best + last), ``csv/``,
    ``complexity.{json,txt}``, ``panels/*.png``, ``wandb/`` and ``summary.json`` (also when the run fails
    before training: status ``failed: <error>``). Ctrl+C ends with ``SystemExit(130)`` after printing the
    ``ckpt_path=`` that resumes the run (docs/RELIABILITY.md).
    """
    start = time.time()
    refuse_finished_run(cfg.paths.output_dir, cfg.get("ckpt_path"))
    out = _output_dir(cfg)
    summary: dict[str, Any] = {"status": "running", "overrides": _overrides()}
    metrics: dict[str, float] = {}
    trainer: Trainer | None = None
    dm = module = None
    try:
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True)
        check_config(cfg)
        check_test_split(cfg, "test" if cfg.get("test") else None)
        cpu_fallback(cfg)
        dm = build_datamodule(cfg)
        module = build_module(cfg)
        callbacks = instantiate_callbacks(cfg.get("callbacks")) + list(extra_callbacks or [])
        callbacks.append(StoreConfig(resolved_container(cfg)))
        callbacks.append(InterruptGuard())
        check_monitors(cfg, module, callbacks)
        prepare_wandb(cfg)
        loggers = start_wandb(instantiate_loggers(cfg.get("logger")), cfg)
        trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        save_config(cfg, out)
        _log_hyperparameters(cfg, module, trainer)
        if (cfg.get("complexity") or {}).get("enabled", True):
            net = getattr(module, "net", module)
            summary["complexity"] = write_complexity(net, complexity_input_size(cfg), out, trainer.loggers)
        if cfg.get("train", True):
            trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
        metrics = scalar_metrics(trainer.callback_metrics)
        if cfg.get("test"):
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
            trainer.test(module, datamodule=dm, ckpt_path=best)
            metrics.update(scalar_metrics(trainer.callback_metrics))
        summary["status"] = "interrupted" if trainer.interrupted else "completed"
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl+C into SystemExit(1)
        summary["status"] = "interrupted"
        metrics = scalar_metrics(trainer.callback_metrics) if trainer is not None else {}
        raise SystemExit(INTERRUPTED_EXIT) from None
    except BaseException as err:
        summary["status"] = f"failed: {type(err).__name__}: {err}"
        raise
    finally:
        summary.update(_final_summary(cfg, out, trainer, metrics, start))
        write_summary(out, summary)
        finish_wandb(0 if summary["status"] == "completed" else 1)
        print_summary(summary)
        if summary["status"] == "interrupted":
            _print_resume_hint(trainer, summary.get("overrides") or [])
    return metrics, {"cfg": cfg, "datamodule": dm, "module": module, "trainer": trainer}


#: exit status of an interrupted run (128 + SIGINT, the shell convention for Ctrl+C)
INTERRUPTED_EXIT = 130


def _print_resume_hint(trainer: Trainer | None, overrides: list[str]) -> None:
    """After Ctrl+C: the command that resumes the run from its last checkpoint."""
    ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") if trainer is not None else ""
    if ckpt and Path(ckpt).is_file():
        args = [*(o for o in overrides if not o.startswith("ckpt_path=")), f"ckpt_path={ckpt}"]
        msg = "interrupted; resume with:\n  python train.py " + " ".join(shlex.quote(a) for a in args)
    else:
        msg = "interrupted before the first checkpoint was written; nothing to resume (start the run again)"
    log.warning(msg)  # the console and the job's log under Hydra; stderr otherwise


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def _final_summary(
    cfg: DictConfig, out: Path, trainer: Trainer | None, metrics: dict[str, float], start: float
) -> dict[str, Any]:
    ckpt = trainer.checkpoint_callback if trainer is not None else None
    highlights: dict[str, Any] = {}
    key = cfg.get("optimized_metric")
    if key and key in metrics:
        highlights[key] = metrics[key]
    highlights["epochs"] = trainer.current_epoch if trainer is not None else 0
    highlights["elapsed_s"] = round(time.time() - start, 1)
    return {
        "method": OmegaConf.to_container(cfg.method, resolve=True) if cfg.get("method") else None,
        "data": cfg.data.get("name"),
        "optimized_metric": key,
        "optimized_mode": cfg.get("optimized_mode"),
        "best_score": float(ckpt.best_model_score) if getattr(ckpt, "best_model_score", None) is not None else None,
        "metrics": metrics,
        "files": _file_locations(out, trainer),
        "highlights": highlights,
    }


# --------------------------------------------------------------------------------- evaluation
def _check_checkpoint_config(cfg: DictConfig, stored: dict | None) -> None:
    """Compare the model / method config of the checkpoint with the one evaluating it."""
    if not stored:
        log.warning("checkpoint carries no config; evaluating with the given model config as is")
        return
    current = resolved_container(cfg)
    diffs = []
    for group in MODEL_KEYS:
        a, b = stored.get(group) or {}, current.get(group) or {}
        for k in sorted(set(a) | set(b)):
            if k not in INIT_ONLY_KEYS and a.get(k) != b.get(k):
                diffs.append(f"{group}.{k}: checkpoint {a.get(k)!r} vs config {b.get(k)!r}")
    if diffs:
        msg = "the checkpoint was trained with another model config:\n  " + "\n  ".join(diffs)
        msg += "\npass the training experiment / overrides (e.g. experiment=... method=...)"
        if cfg.get("strict_config", True):
            raise ConfigError(msg)
        log.warning(msg)


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split`` (val | test); writes ``metrics.json`` in the run dir."""
    out = _output_dir(cfg)
    split = cfg.get("split", "val")
    if split not in ("val", "test"):
        raise ConfigError(f"split must be 'val' or 'test', got {split!r}")
    check_test_split(cfg, split)
    ckpt_path = Path(str(cfg.ckpt_path)).expanduser()
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(ckpt_path)!r} does not exist")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    check_config(cfg)
    cpu_fallback(cfg)
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    _check_checkpoint_config(cfg, checkpoint.get(CONFIG_KEY))
    dm = build_datamodule(cfg, "validate" if split == "val" else "test")
    module = build_module(cfg)
    module.load_state_dict(checkpoint["state_dict"])
    del checkpoint
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    prepare_wandb(cfg)
    loggers = start_wandb(instantiate_loggers(cfg.get("logger")), cfg)
    trainer: Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        run = trainer.validate if split == "val" else trainer.test
        run(module, datamodule=dm)
        metrics = scalar_metrics(trainer.callback_metrics)
        result = {
            "ckpt_path": str(ckpt_path.resolve()),
            "split": split,
            "data": cfg.data.get("name"),
            "method": OmegaConf.to_container(cfg.method, resolve=True) if cfg.get("method") else None,
            "metrics": metrics,
        }
        if trainer.is_global_zero:
            (out / "metrics.json").write_text(json.dumps(result, indent=2))
            save_config(cfg, out)
            print_summary(
                {"status": f"evaluated ({split})", "files": _file_locations(out, trainer), "highlights": metrics}
            )
    finally:
        finish_wandb()
    return metrics, {"cfg": cfg, "datamodule": dm, "module": module, "trainer": trainer}


__all__ = ["CONFIG_KEY", "build_datamodule", "build_module", "evaluate", "train"]
