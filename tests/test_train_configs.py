"""Every config group composes: experiments x methods (the model builds), eval, trainers, loggers, debug,
the Optuna search; config typos fail at composition."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from bindense.lit import DenseLitModule
from bindense.lit.pipeline import build_module
from bindense.metrics import main_metric
from bindense.utils.compose import CONF_DIR, compose_config
from bindense.utils.run import resolved_container

PAPER_EXPERIMENTS = {
    # name: (data, decoder, lr, epochs, per-device batch x accumulation, main metric)
    "bidense_ade20k": ("ade20k", "upernet", 1e-4, 50, 32, "val/seg/mIoU_best"),
    "bidense_voc2012": ("voc2012", "upernet", 1e-4, 200, 32, "val/seg/mIoU_best"),
    "bidense_nyu": ("nyu_depth", "upernet", 6e-5, 50, 32, "val/depth/d1_best"),
    "bidense_kitti": ("kitti_depth", "upernet", 1e-4, 50, 64, "val/depth/d1_best"),
    "bidense_dpt_ade20k": ("ade20k", "dpt", 2e-4, 50, 32, "val/seg/mIoU_best"),
    "bidense_dpt_kitti": ("kitti_depth", "dpt", 3e-5, 50, 64, "val/depth/d1_best"),
}
METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))


def test_paper_experiment_files_exist():
    assert set(PAPER_EXPERIMENTS) <= {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    assert {"fp32", "fp32_scratch", "bnn", "reactnet", "adabin", "bisrnet", "bidense", "cfb_only"} <= set(METHODS)


@pytest.mark.parametrize("name", sorted(PAPER_EXPERIMENTS))
def test_experiment_carries_paper_recipe_and_builds(name, tmp_path):
    data, decoder, lr, epochs, eff_batch, metric = PAPER_EXPERIMENTS[name]
    cfg = compose_config("train", [f"experiment={name}", "trainer=cpu"], tmp_path)
    assert cfg.data.name == data and cfg.model.decoder == decoder and cfg.model.width == "tiny"
    assert cfg.module.optimizer.lr == pytest.approx(lr) and cfg.module.optimizer.weight_decay == 0.01
    assert "OneCycleLR" in cfg.module.scheduler._target_ and cfg.module.scheduler.max_lr == pytest.approx(lr)
    assert cfg.trainer.max_epochs == epochs
    assert cfg.data.batch_size * cfg.trainer.accumulate_grad_batches == eff_batch
    assert cfg.optimized_metric == metric
    task = metric.split("/")[1]
    assert cfg.optimized_mode == main_metric(task)[1]
    assert cfg.callbacks.model_checkpoint.monitor == metric
    if task == "depth":
        assert cfg.module.losses.depth.variance_focus == 0.85
        assert cfg.module.losses.depth.min_depth == (1.0 if "kitti" in name else 0.1)
        assert cfg.data.depth_crop == ("garg" if "kitti" in name else "eigen")
    if data == "ade20k":
        assert cfg.model.num_classes == 151 and cfg.data.num_classes == 150
    resolved_container(cfg)
    hydra.utils.instantiate(cfg.data)  # constructs without touching the (absent) dataset
    module = build_module(cfg)  # the paper-size model of the experiment
    assert isinstance(module, DenseLitModule) and module.tasks == [task]
    assert cfg.optimized_metric in module.monitor_keys()


@pytest.mark.parametrize("name", sorted(PAPER_EXPERIMENTS))
def test_every_method_row_builds(name, tmp_path):
    """Table-1-style sweeps: each method composes with the experiment and builds (at nano width)."""
    for method in METHODS:
        cfg = compose_config(
            "train", [f"experiment={name}", f"method={method}", "trainer=cpu", "model.width=nano"], tmp_path
        )
        assert cfg.method.name == method and cfg.model.method.name == method
        module = build_module(cfg)
        assert module.net.spec.name == method


def test_dab_cfb_ablation_grid_composes(tmp_path):
    for act in ("rsign", "dab"):
        for bypass in ("none", "cfb"):
            cfg = compose_config(
                "train",
                [
                    "experiment=bidense_ade20k",
                    f"method.activation={act}",
                    f"method.bypass={bypass}",
                    "trainer=cpu",
                    "model.width=nano",
                ],
                tmp_path,
            )
            assert (cfg.model.method.activation, cfg.model.method.bypass) == (act, bypass)
            build_module(cfg)


@pytest.mark.parametrize("name", sorted(PAPER_EXPERIMENTS))
def test_eval_accepts_every_experiment(name, tmp_path):
    cfg = compose_config("eval", [f"experiment={name}", "ckpt_path=x.ckpt", "trainer=cpu"], tmp_path)
    assert cfg.data.name == PAPER_EXPERIMENTS[name][0] and cfg.model.width == "tiny"
    assert cfg.task_name == "eval" and cfg.split == "val"
    resolved_container(cfg)


def test_default_train_config(tmp_path):
    cfg = compose_config("train", [], tmp_path)
    assert cfg.data.name == "synthetic" and cfg.method.name == "bidense" and cfg.model.width == "nano"
    assert cfg.trainer.accelerator == "cpu"
    assert set(cfg.logger) == {"csv", "wandb"} and cfg.logger.wandb.offline is None
    assert {"model_checkpoint", "early_stopping", "lr_monitor", "rich_progress_bar", "prediction_panels"} <= set(
        cfg.callbacks
    )
    assert cfg.callbacks.model_checkpoint.save_last is True
    for key in ("seed", "ckpt_path", "tags", "task_name", "optimized_metric"):
        assert key in cfg
    assert cfg.distill.enabled is False


@pytest.mark.parametrize(
    "override, check",
    [
        ("trainer=ddp", lambda c: c.trainer.strategy == "ddp" and c.trainer.sync_batchnorm),
        ("trainer=ddp_sim", lambda c: c.trainer.strategy.process_group_backend == "gloo" and c.trainer.devices == 2),
        ("trainer=gpu", lambda c: c.trainer.accelerator == "gpu"),
        ("logger=many", lambda c: set(c.logger) == {"csv", "wandb", "tensorboard"}),
        ("logger=tensorboard", lambda c: set(c.logger) == {"tensorboard"}),
        ("logger=none", lambda c: not c.logger),
        ("debug=fdr", lambda c: c.trainer.fast_dev_run is True and c.task_name == "debug"),
        ("debug=overfit", lambda c: c.trainer.overfit_batches == 2),
        ("debug=limit", lambda c: c.trainer.limit_train_batches == 4),
        ("callbacks=none", lambda c: not c.callbacks),
    ],
)
def test_group_options_compose(override, check, tmp_path):
    assert check(compose_config("train", [override], tmp_path))


def test_optuna_search_composes(tmp_path):
    cfg = compose_config("train", ["hparams_search=synthetic_optuna"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert "OptunaSweeper" in sweeper._target_ and sweeper.direction == "maximize"
    assert cfg.hydra.mode.name == "MULTIRUN" and "module.optimizer.lr" in sweeper.params


def test_submitit_launcher_is_available(tmp_path):
    cfg = compose_config("train", ["hydra/launcher=submitit_slurm"], tmp_path)
    assert "SlurmLauncher" in cfg.hydra.launcher._target_


@pytest.mark.parametrize(
    "overrides, error",
    [
        (["method=bidens"], MissingConfigException),  # unknown option of a group
        (["trainer.max_epoch=3"], ConfigCompositionException),  # unknown key
        (["experiment=nope"], MissingConfigException),
    ],
)
def test_config_typos_fail_at_composition(overrides, error, tmp_path):
    with pytest.raises(error):
        compose_config("train", overrides, tmp_path)


def test_conf_dir_is_the_repository_conf():
    assert (CONF_DIR / "train.yaml").is_file() and (CONF_DIR / "eval.yaml").is_file()
    assert Path(CONF_DIR).parent.joinpath("train.py").is_file()
