"""DenseLitModule, its losses and callbacks on a tiny stand-in net (no data module, no Hydra)."""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bindense.lit import DenseLitModule, EpochSeed, NonFiniteLossError, PredictionPanels, SegCrossEntropy, SILogLoss

K = 3


class TinyNet(nn.Module):
    """A 1x1-conv 'model' with a seg head (K classes) and a depth head (metres)."""

    def __init__(self, nan_after: int | None = None) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.seg = nn.Conv2d(8, K, 1)
        self.depth = nn.Conv2d(8, 1, 1)
        self.nan_after = nan_after
        self.calls = 0

    def forward(self, x: torch.Tensor, return_features: bool = False):
        self.calls += 1
        f = torch.relu(self.body(x))
        out = {"seg": self.seg(f), "depth": 10 * torch.sigmoid(self.depth(f))}
        if self.training and self.nan_after is not None and self.calls > self.nan_after:
            out = {k: v * float("nan") for k, v in out.items()}
        return (out, {"body": f}) if return_features else out


class Scenes(Dataset):
    """Left half class 0 / right half class 1 (class 2 never present), depth = 2 m | 5 m, 255 on a row."""

    def __init__(self, n: int = 8) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        seg = torch.zeros(16, 16, dtype=torch.long)
        seg[:, 8:] = 1
        seg[0] = 255
        image = torch.randn(3, 16, 16, generator=g) * 0.1
        image[0] += (seg == 1).float() * 2
        depth = torch.where(seg == 1, 5.0, 2.0)[None]
        depth[:, 0] = 0.0
        return {"image": image, "seg": seg, "depth": depth}


def make_module(tasks=("seg",), net=None, lr=1e-2, cls=DenseLitModule, **kw) -> DenseLitModule:
    return cls(
        net=net or TinyNet(),
        tasks=list(tasks),
        losses={"seg": SegCrossEntropy(255), "depth": SILogLoss(min_depth=0.1)},
        optimizer=functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01),
        scheduler=functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=lr),
        metrics={"seg": {"num_classes": K, "ignore_index": 255}, "depth": {"max_depth": 10.0}},
        **kw,
    )


def loaders(n: int = 8, bs: int = 4) -> tuple[DataLoader, DataLoader]:
    return DataLoader(Scenes(n), batch_size=bs, shuffle=True), DataLoader(Scenes(4), batch_size=bs)


def make_trainer(tmp_path, epochs: int = 2, callbacks=(), **kw) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **kw,
    )


# ----------------------------------------------------------------------------- losses
def test_silog_matches_formula_and_ignores_invalid():
    gt = torch.tensor([[[[2.0, 4.0], [0.0, 8.0]]]])
    pred = torch.tensor([[[[1.0, 5.0], [3.0, 8.0]]]])
    d = torch.log(torch.tensor([1.0, 5.0, 8.0])) - torch.log(torch.tensor([2.0, 4.0, 8.0]))
    expected = 10 * torch.sqrt((d**2).mean() - 0.85 * d.mean() ** 2)
    assert torch.allclose(SILogLoss(0.85, min_depth=0.1)(pred, gt), expected)
    # the min_depth threshold (KITTI 1.0): gt 2 m is below 3 m and drops out
    d2 = d[1:]
    expected2 = 10 * torch.sqrt((d2**2).mean() - 0.85 * d2.mean() ** 2)
    assert torch.allclose(SILogLoss(0.85, min_depth=3.0)(pred, gt), expected2)
    empty = SILogLoss(min_depth=100.0)(pred.requires_grad_(), gt)
    assert empty.item() == 0.0 and empty.requires_grad


def test_seg_cross_entropy_ignores_label_and_resizes():
    logits = torch.randn(2, K, 4, 4, requires_grad=True)
    target = torch.randint(0, K, (2, 4, 4))
    target[0, 0] = 255
    keep = target != 255
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
    assert torch.allclose(SegCrossEntropy(255)(logits, target), manual)
    small = torch.randn(2, K, 2, 2)
    assert torch.isfinite(SegCrossEntropy(255)(small, target))  # upsampled to the label size
    zero = SegCrossEntropy(255)(logits, torch.full((2, 4, 4), 255))
    assert zero.item() == 0.0
    zero.backward()


# ----------------------------------------------------------------------------- module
def test_module_requires_a_loss_per_task():
    with pytest.raises(ValueError, match="no loss configured"):
        DenseLitModule(TinyNet(), ["seg", "depth"], {"seg": SegCrossEntropy()}, torch.optim.AdamW)


def test_fit_logs_stage_task_metric_keys_and_best(tmp_path):
    module = make_module(tasks=("seg", "depth"))
    trainer = make_trainer(tmp_path, epochs=2)
    trainer.fit(module, *loaders())
    keys = set(trainer.logged_metrics)
    for key in (
        "train/loss",
        "val/loss",
        "val/seg/mIoU",
        "val/seg/pixAcc",
        "val/seg/mIoU_best",
        "val/depth/d1",
        "val/depth/abs_rel",
        "val/depth/d1_best",
        "val/seg/loss",
        "val/depth/loss",
    ):
        assert key in keys, key
    assert set(module.monitor_keys()) >= {"val/seg/mIoU_best", "val/depth/d1_best", "val/loss"}
    # the best tracker is persistent (a resumed run keeps it) and equals the max over validations
    assert any(k.startswith("best.seg__mIoU") for k in module.state_dict())
    assert trainer.logged_metrics["val/seg/mIoU_best"] >= trainer.logged_metrics["val/seg/mIoU"] - 1e-6
    # OneCycleLR spans the run: 2 epochs x 2 steps
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.total_steps == 4 and trainer.lr_scheduler_configs[0].interval == "step"
    result = trainer.validate(module, loaders()[1], verbose=False)[0]
    assert 0.0 <= result["val/seg/pixAcc"] <= 1.0 and "val/seg/mIoU_best" not in result


def test_test_stage_uses_its_own_metrics(tmp_path):
    module = make_module()
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.fit(module, *loaders())
    out = trainer.test(module, loaders()[1], verbose=False)[0]
    assert {"test/seg/mIoU", "test/seg/pixAcc", "test/loss"} <= set(out)
    assert not any(k.endswith("_best") for k in out)


def test_features_and_extra_losses_extension_points(tmp_path):
    class WithAux(DenseLitModule):
        def extra_losses(self, batch, outputs, features, stage):
            return {"aux": 0.1 * features["body"].pow(2).mean()}

    module = make_module(cls=WithAux)
    module.return_features = True
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.fit(module, *loaders())
    assert "train/aux" in trainer.logged_metrics and "train/seg/loss" in trainer.logged_metrics


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    net = TinyNet(nan_after=2)  # epoch 0: 2 good training steps, then NaN in epoch 1
    module = make_module(net=net)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer = make_trainer(tmp_path, epochs=3, callbacks=[ckpt], num_sanity_val_steps=0)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss .* epoch 1.*last\.ckpt"):
        trainer.fit(module, *loaders())
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    # the NaN step never reached the optimizer: the live weights are still finite
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_prediction_panels_written_each_validation(tmp_path):
    panels = PredictionPanels(tmp_path / "panels", num_samples=2, max_depth=10.0)
    trainer = make_trainer(tmp_path, epochs=2, callbacks=[panels])
    trainer.fit(make_module(tasks=("seg", "depth")), *loaders())
    names = sorted(p.name for p in (tmp_path / "panels").glob("*.png"))
    assert names == ["val_epoch000.png", "val_epoch001.png"]  # not the sanity check


def test_epoch_seed_makes_epochs_reproducible(tmp_path):
    def run() -> torch.Tensor:
        L.seed_everything(0)
        module = make_module()
        trainer = make_trainer(tmp_path, epochs=2, callbacks=[EpochSeed(7)], deterministic=True)
        trainer.fit(module, *loaders())
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    assert torch.equal(run(), run())


def test_ede_progress_follows_epochs(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("bindense.lit.dense.set_ede_progress", lambda net, p: seen.append(p))
    trainer = make_trainer(tmp_path, epochs=2, limit_val_batches=0)
    trainer.fit(make_module(), loaders()[0])
    assert seen == [0.0, 0.5] and all(math.isfinite(p) for p in seen)


def test_resume_with_another_schedule_length_fails_clearly(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    make_trainer(tmp_path, epochs=1, callbacks=[ckpt]).fit(make_module(), *loaders())
    trainer = make_trainer(tmp_path, epochs=2)
    with pytest.raises(ValueError, match="LR schedule spans 2 steps but this run has 4"):
        trainer.fit(make_module(), *loaders(), ckpt_path=tmp_path / "checkpoints" / "last.ckpt")


def test_viz_colour_maps():
    from bindense.viz import colorize, colorize_depth, colorize_labels, colorize_normals, denormalize, label_palette

    pal = label_palette(256)
    assert pal.shape == (256, 3) and len({tuple(c) for c in pal[:21]}) == 21
    lab = torch.tensor([[0, 1], [255, 2]])
    rgb = colorize_labels(lab)
    assert rgb.shape == (2, 2, 3) and tuple(rgb[1, 0]) == (255, 255, 255)
    assert colorize("seg", torch.randn(K, 2, 2)).shape == (2, 2, 3)  # scores are arg-maxed
    depth = colorize_depth(torch.tensor([[0.0, 1.0], [5.0, 10.0]]), max_depth=10.0)
    assert tuple(depth[0, 0]) == (0, 0, 0) and depth[0, 1].sum() > depth[1, 1].sum()  # near is bright
    normals = torch.zeros(3, 1, 2)
    normals[2, 0, 1] = 1.0
    n = colorize_normals(normals)
    assert tuple(n[0, 0]) == (0, 0, 0) and tuple(n[0, 1]) == (127, 127, 255)
    edge = colorize("edge", torch.tensor([[[-20.0, 20.0]]]))  # logits -> sigmoid -> 0 / 1
    assert edge[0, 0].max() == 0 and edge[0, 1].min() == 255
    img = denormalize(torch.zeros(3, 2, 2))
    assert img.dtype.name == "uint8" and tuple(img[0, 0]) == (124, 116, 104)
