"""Smoke tests of train / eval through Hydra compose on tiny synthetic scenes, and fail-fast checks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bindense.data.errors import DatasetLayoutError
from bindense.lit.pipeline import CONFIG_KEY, evaluate, train
from bindense.utils.compose import CONF_DIR, compose_config
from bindense.utils.run import ConfigError

#: a shared cache of tiny synthetic scenes (generated once, reused by later runs)
DATA_DIR = CONF_DIR.parent / ".cache" / "tests" / "data"
TINY = [
    f"paths.data_dir={DATA_DIR}",
    "data.synthetic.num_train=16",
    "data.synthetic.num_val=8",
    "data.synthetic.height=64",
    "data.synthetic.width=80",
    "data.crop_size=[64,80]",
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "logger=csv",
    "callbacks.rich_progress_bar=null",
    "extras.print_config=false",
]


def tiny_train(tmp_path: Path, *overrides: str):
    cfg = compose_config("train", [*TINY, *overrides], tmp_path)
    return train(cfg)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg_run")
    metrics, objects = tiny_train(out)
    return out, metrics, objects


def test_train_writes_every_run_file(seg_run):
    out, metrics, objects = seg_run
    assert (out / "config.yaml").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert len(list((out / "checkpoints").glob("best_epoch*.ckpt"))) == 1
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    keys = set().union(*(r.keys() for r in rows))
    assert {"val/seg/mIoU", "val/seg/pixAcc", "val/seg/mIoU_best", "train/loss", "train/seg/loss"} <= keys
    assert set(objects["module"].monitor_keys()) <= keys  # every monitorable key is really logged
    complexity = json.loads((out / "complexity.json").read_text())
    assert {"params_total", "params_binary", "ops", "bops", "flops", "paper_params"} <= set(complexity)
    assert "OPs" in (out / "complexity.txt").read_text()
    assert [p.name for p in (out / "panels").glob("*.png")] == ["val_epoch000.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["method"]["name"] == "bidense"
    assert summary["files"]["last_checkpoint"].endswith("last.ckpt")
    assert summary["metrics"]["val/seg/mIoU_best"] == pytest.approx(metrics["val/seg/mIoU_best"])
    assert 0.0 <= metrics["val/seg/mIoU"] <= 1.0


def test_checkpoint_carries_resolved_config(seg_run):
    import torch

    out, _, _ = seg_run
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt[CONFIG_KEY]["method"]["name"] == "bidense" and "hydra" not in ckpt[CONFIG_KEY]
    assert any(k.startswith("best.") for k in ckpt["state_dict"])


def test_eval_writes_metrics_json(seg_run, tmp_path):
    out, _, _ = seg_run
    ckpt = out / "checkpoints" / "last.ckpt"
    cfg = compose_config("eval", [*TINY[:8], f"ckpt_path={ckpt}", "logger=csv"], tmp_path)
    metrics, _ = evaluate(cfg)
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["split"] == "val" and result["ckpt_path"] == str(ckpt.resolve())
    assert {"val/seg/mIoU", "val/seg/pixAcc"} <= set(result["metrics"])
    assert result["metrics"]["val/seg/mIoU"] == pytest.approx(metrics["val/seg/mIoU"])
    assert (tmp_path / "panels" / "val_epoch000.png").is_file()


def test_eval_test_split(seg_run, tmp_path):
    out, _, _ = seg_run
    cfg = compose_config(
        "eval",
        [*TINY[:8], f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "split=test", "data.test_split=val"]
        + ["logger=none"],
        tmp_path,
    )
    metrics, _ = evaluate(cfg)
    assert "test/seg/mIoU" in metrics and (tmp_path / "panels" / "test.png").is_file()


def test_eval_refuses_checkpoint_of_another_model(seg_run, tmp_path):
    out, _, _ = seg_run
    cfg = compose_config(
        "eval", [*TINY[:8], f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "method=bnn", "logger=none"], tmp_path
    )
    with pytest.raises(ConfigError, match=r"method\.name: checkpoint 'bidense' vs config 'bnn'"):
        evaluate(cfg)


def test_eval_missing_checkpoint_fails_clearly(tmp_path):
    cfg = compose_config("eval", [*TINY[:8], "ckpt_path=/nonexistent/last.ckpt"], tmp_path)
    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        evaluate(cfg)


def test_depth_training_logs_depth_metrics(tmp_path):
    metrics, objects = tiny_train(tmp_path, "data=synthetic_depth")  # no other override: monitors val/depth/d1_best
    assert objects["cfg"].optimized_metric == "val/depth/d1_best" and objects["cfg"].optimized_mode == "max"
    assert objects["trainer"].checkpoint_callback.monitor == "val/depth/d1_best"
    assert {"val/depth/d1", "val/depth/abs_rel", "val/depth/rmse", "val/depth/d1_best"} <= set(metrics)
    assert (tmp_path / "panels" / "val_epoch000.png").is_file()


def test_missing_dataset_fails_before_training(tmp_path):
    overrides = [o for o in TINY if not o.startswith(("data.synthetic", "paths.data_dir"))]
    cfg = compose_config(
        "train", [*overrides, "data=voc2012", f"paths.data_dir={tmp_path / 'nowhere'}"], tmp_path / "run"
    )
    with pytest.raises(DatasetLayoutError, match="VOC"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "override, match",
    [
        ("optimized_metric=val/seg/miou_best", "never logs"),
        ("optimized_metric=val/depth/d1_best", "with <task> one of"),
        ("optimized_mode=maximum", "optimized_mode"),
        ("callbacks.early_stopping.monitor=val/seg/acc", "EarlyStopping monitors"),
    ],
)
def test_bad_monitor_fails_before_training(tmp_path, override, match):
    cfg = compose_config("train", [*TINY, override], tmp_path)
    with pytest.raises(ConfigError, match=match):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()
