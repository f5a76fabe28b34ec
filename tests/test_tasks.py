"""The task registry: built-in tasks, clear errors, and a toy task registered inside a test only, built into a
model and trained one step without touching any other file."""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import Metric

from bindense.data.transforms import DensePipeline
from bindense.lit.dense import DenseLitModule
from bindense.metrics import main_metric, metric_direction, task_metrics
from bindense.models import build_model
from bindense.tasks import Task, TaskMetric, get_task, register_task, registered, task_names, unregister_task
from bindense.viz import colorize

TINY = dict(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], neck_channels=8, depth_hidden=8)


# ----------------------------------------------------------------------------- a toy task, defined here only
class ToyL1(nn.Module):
    """Mean absolute error, the toy task's own loss."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (F.interpolate(pred, size=target.shape[-2:], mode="bilinear") - target).abs().mean()


class ToyMSE(Metric):
    """Mean squared error over every pixel, the toy task's own metric."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sq", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.sq += ((pred.double() - target.double()) ** 2).sum()
        self.n += target.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        return {"toy_mse": (self.sq / self.n.clamp(min=1)).float()}


TOY = Task(
    name="brightness",  # a 1-channel regression: the image's mean over its colour channels
    kind="regression",
    head="linear",
    channels=1,
    loss=ToyL1,
    metrics={"default": TaskMetric(ToyMSE, "toy_mse", {"toy_mse": "min"})},
)


def toy_batches(n: int = 2, b: int = 2, size: int = 32) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        image = torch.rand(b, 3, size, size, generator=g)
        out.append({"image": image, "brightness": image.mean(1, keepdim=True)})
    return out


def test_a_toy_task_trains_one_step_with_its_own_loss_and_metric(tmp_path):
    assert "brightness" not in task_names()
    with registered(TOY):
        net = build_model("upernet", "convnext", "nano", "bidense", ["brightness"], **TINY)
        assert net.heads["brightness"].predictor.out_channels == 1
        module = DenseLitModule(
            net,
            ["brightness"],
            None,  # no losses given: the task's default loss
            functools.partial(torch.optim.AdamW, lr=1e-2),
        )
        assert isinstance(module.losses["brightness"], ToyL1)
        assert module.main_keys == {"brightness": ("toy_mse", "min")}
        assert metric_direction("val/brightness/toy_mse") == "min"
        before = {k: v.clone() for k, v in net.state_dict().items()}
        trainer = L.Trainer(
            default_root_dir=tmp_path,
            max_epochs=1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_train_batches=1,
        )
        batches = toy_batches()
        trainer.fit(module, DataLoader(batches, batch_size=None), DataLoader(batches, batch_size=None))
        logged = trainer.logged_metrics
        assert {"train/brightness/loss", "val/brightness/toy_mse", "val/brightness/toy_mse_best"} <= set(logged)
        assert torch.isfinite(logged["val/brightness/toy_mse"])
        changed = [k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
        assert any(k.startswith("heads.brightness.") for k in changed)
        # the transforms and the colour maps follow its kind: a float map, flipped with the image
        sample = {"image": np.zeros((4, 6, 3), np.uint8), "brightness": np.arange(24, dtype=np.float32).reshape(4, 6)}
        flipped = DensePipeline({"hflip": 1.0}, train=True, normalize=False)(sample)["brightness"]
        assert flipped.shape == (1, 4, 6) and flipped.dtype == torch.float32
        assert torch.equal(flipped[0], torch.from_numpy(sample["brightness"][:, ::-1].copy()))
        assert colorize("brightness", flipped).shape == (4, 6, 3)
    # the registration is undone: nothing else sees the toy task
    assert "brightness" not in task_names()
    with pytest.raises(ValueError, match="unknown task 'brightness'"):
        get_task("brightness")


# ----------------------------------------------------------------------------- the built-in tasks
def test_builtin_tasks_declare_what_the_modules_used_to_hard_code():
    assert task_names() == ("seg", "parts", "depth", "normals", "edge", "sal")
    assert [t for t in task_names() if get_task(t).kind == "label"] == ["seg", "parts"]
    assert [t for t in task_names() if get_task(t).kind == "probability"] == ["edge", "sal"]
    assert [t for t in task_names() if get_task(t).vector] == ["normals"]
    assert get_task("seg").out_channels({"num_classes": 7}) == 7
    assert get_task("normals").out_channels({}) == 3
    assert main_metric("depth") == ("d1", "max") and main_metric("depth", "pooled") == ("rmse_pooled", "min")
    assert main_metric("seg", "pooled") == ("mIoU", "max")  # single-metric tasks ignore the protocol
    assert type(task_metrics("depth", protocol="pooled")).__name__ == "PooledDepthRMSE"
    assert get_task("edge").make_loss().pos_weight == 0.95
    assert get_task("sal").make_loss().pos_weight is None


def test_registry_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown task .segm. \(data.tasks\); registered: seg, parts, depth"):
        get_task("segm")
    with pytest.raises(ValueError, match="already registered"):
        register_task(TOY.__class__(**{**TOY.__dict__, "name": "seg"}))
    with pytest.raises(ValueError, match="the seg task needs num_classes"):
        get_task("seg").out_channels({})
    with pytest.raises(ValueError, match="unknown depth protocol 'kitti'"):
        task_metrics("depth", protocol="kitti")
    with pytest.raises(ValueError, match="kind must be one of"):
        Task("x", "count", "linear", 1, ToyL1, TOY.metrics)
    with registered(Task("x", "regression", "softmax", 1, ToyL1, TOY.metrics, display="heatmap")):
        with pytest.raises(ValueError, match=r"task 'x' asks for an unregistered head: .*'softmax' \(Task.head\)"):
            build_model("upernet", "convnext", "nano", "fp32", ["x"], **TINY)
        with pytest.raises(ValueError, match="task 'x' asks for an unregistered display: unknown colour map 'heatmap'"):
            colorize("x", torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="main metric 'mse' has no direction"):
        TaskMetric(ToyMSE, "mse", {"toy_mse": "min"})
    contradicting = Task(
        "x", "regression", "linear", 1, ToyL1, {"default": TaskMetric(ToyMSE, "rmse", {"rmse": "max"})}
    )
    with pytest.raises(ValueError, match="contradict"):
        register_task(contradicting)
    assert "x" not in task_names()
    with pytest.raises(ValueError, match="unknown task 'x'"):
        unregister_task("x")
