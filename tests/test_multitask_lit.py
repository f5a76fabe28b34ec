"""Multi-task LightningModule: losses vs numpy, weights from the experiment configs, VIB term, delta_m logging."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Trainer
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from bindense.lit.losses import SegCrossEntropy
from bindense.lit.multitask import BinaryMapLoss, DepthL1Loss, MultiTaskLitModule, NormalsL1Loss
from bindense.models import build_model

CONF = os.path.join(os.path.dirname(__file__), "..", "conf")
TINY = dict(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], neck_channels=8, depth_hidden=8)
TASKS = ["seg", "depth", "normals", "edge", "sal"]


# ----------------------------------------------------------------------------- losses
def test_depth_l1_on_valid_pixels():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gt = torch.tensor([[[[1.5, 0.0], [1.0, 0.0]]]])
    assert float(DepthL1Loss()(pred, gt)) == pytest.approx((0.5 + 2.0) / 2)
    assert float(DepthL1Loss()(pred, torch.zeros_like(gt))) == 0.0


def test_normals_l1_normalises_prediction_and_skips_invalid():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    gt = torch.nn.functional.normalize(torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), dim=1)
    gt[0, :, 0, 0] = 0.0  # invalid pixel
    p = pred.numpy() / np.linalg.norm(pred.numpy(), axis=1, keepdims=True)
    valid = np.broadcast_to(np.abs(gt.numpy()).sum(1, keepdims=True) > 0, gt.shape)
    expected = np.abs(p - gt.numpy())[valid].mean()
    assert float(NormalsL1Loss()(pred, gt)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("pos_weight", [0.95, None])
def test_binary_map_loss_matches_numpy(pos_weight):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64)
    target = (torch.rand(2, 1, 5, 5, generator=g) > 0.7).double()
    target[1, 0, 0, :2] = 255  # ignored
    x, y = logits.numpy(), target.numpy()
    valid = y != 255
    p = 1 / (1 + np.exp(-x))
    if pos_weight is None:
        per = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    else:
        per = -(pos_weight * y * np.log(p) + (1 - pos_weight) * (1 - y) * np.log(1 - p))
    expected = per[valid].mean()
    assert float(BinaryMapLoss(pos_weight)(logits, target)) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError):
        BinaryMapLoss(1.5)


# ----------------------------------------------------------------------------- configs
def compose_cfg(*overrides: str):
    os.environ.setdefault("PROJECT_ROOT", os.path.abspath(os.path.join(CONF, "..")))
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


NYUD_W = {"seg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0}
PASCAL_W = {"seg": 1.0, "parts": 2.0, "sal": 5.0, "edge": 50.0, "normals": 10.0}
SYNTH_W = {"seg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0, "sal": 5.0}


@pytest.mark.parametrize(
    ("experiment", "weights", "method"),
    [
        ("bimtdp_nyud", NYUD_W, "bidense"),
        ("bimtdp_nyud_teacher", NYUD_W, "fp32_bidense"),
        ("bimtdp_pascal", PASCAL_W, "bidense"),
        ("bimtdp_pascal_teacher", PASCAL_W, "fp32_bidense"),
        ("bimtdp_synthetic", SYNTH_W, "bidense"),
        ("bimtdp_synthetic_teacher", SYNTH_W, "fp32_bidense"),
    ],
)
def test_loss_weights_from_config(experiment, weights, method):
    cfg = compose_cfg(f"experiment={experiment}")
    assert cfg.method.name == method
    assert sorted(cfg.data.tasks) == sorted(weights)
    assert cfg.model._target_ == "bindense.models.build_model" and cfg.model.shared_decoder is False
    # the module built from the config carries these weights, one loss per task
    net = build_model(
        "upernet",
        "convnext",
        "nano",
        "fp32",
        list(cfg.data.tasks),
        num_classes=3,
        num_parts=3,
        max_depth=10.0,
        **TINY,
        shared_decoder=False,
    )
    module_cfg = OmegaConf.to_container(cfg.module, resolve=True)
    module_cfg["metrics"] = {t: {} for t in cfg.data.tasks}  # metric sizes are the dataset's
    for t in ("seg", "parts"):
        if t in cfg.data.tasks:
            module_cfg["metrics"][t] = {"num_classes": 3}
    import hydra

    module = hydra.utils.instantiate(module_cfg, net=net)
    assert isinstance(module, MultiTaskLitModule)
    assert module.loss_weights == weights
    assert set(module.losses) == set(weights)
    if "edge" in weights:
        assert module.losses["edge"].pos_weight == 0.95
    if "sal" in weights:
        assert module.losses["sal"].pos_weight is None
    assert module.vib_beta == cfg.model.vib.beta


def test_experiment_variants_compose():
    cfg = compose_cfg("experiment=bimtdp_synthetic_single", "data.tasks=[depth]")
    assert cfg.optimized_metric == "val/depth/rmse_pooled_best" and cfg.optimized_mode == "min"
    assert cfg.module.baselines is None
    cfg = compose_cfg("experiment=bimtdp_nyud", "model.vib.enabled=true", "distill=feature", "distill.teacher_ckpt=x")
    assert cfg.model.vib.enabled and cfg.distill.enabled and cfg.distill.distiller.teacher_ckpt == "x"
    cfg = compose_cfg("experiment=bimtdp_pascal", "distill=logit")
    assert cfg.distill.mode == "logit" and list(cfg.distill.logit_tasks) == ["seg"]
    assert cfg.module.metrics.edge.max_dist == 0.0075 and cfg.module.metrics.sal.beta2 == 0.3
    assert compose_cfg("experiment=bimtdp_nyud").module.metrics.depth.protocol == "pooled"


# ----------------------------------------------------------------------------- training loop
def make_batches(n: int = 2, h: int = 32, w: int = 32) -> list[dict]:
    g = torch.Generator().manual_seed(4)
    items = []
    for _ in range(n * 2):
        normals = torch.nn.functional.normalize(torch.randn(3, h, w, generator=g), dim=0)
        items.append(
            {
                "image": torch.randn(3, h, w, generator=g),
                "seg": torch.randint(0, 3, (h, w), generator=g),
                "depth": torch.rand(1, h, w, generator=g) * 9 + 0.5,
                "normals": normals,
                "edge": (torch.rand(1, h, w, generator=g) > 0.9).float(),
                "sal": (torch.rand(1, h, w, generator=g) > 0.5).float(),
            }
        )
    return items


def test_fit_logs_vib_kl_and_delta_m(tmp_path):
    net = build_model(
        "upernet",
        "convnext",
        "nano",
        "bidense",
        TASKS,
        num_classes=3,
        max_depth=10.0,
        vib={"enabled": True},
        **TINY,
        shared_decoder=False,
    )
    baselines = {
        "seg/mIoU": 0.5,
        "depth/rmse_pooled": 1.0,
        "normals/mean_angle": 30.0,
        "edge/odsF_approx": 0.4,
        "sal/maxF": 0.7,
    }
    losses = {
        "seg": SegCrossEntropy(),
        "depth": DepthL1Loss(),
        "normals": NormalsL1Loss(),
        "edge": BinaryMapLoss(0.95),
        "sal": BinaryMapLoss(None),
    }
    module = MultiTaskLitModule(
        net,
        TASKS,
        losses,
        optimizer=torch.optim.AdamW,
        vib_beta=0.5,
        baselines=baselines,
        loss_weights={"normals": 10.0, "edge": 50.0},
        metrics={"seg": {"num_classes": 3}, "depth": {"protocol": "pooled", "max_depth": 10.0}},
    )
    assert "val/mtl/delta_m" in module.monitor_keys() and "val/mtl/delta_m_best" in module.monitor_keys()
    data = make_batches()
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(data, batch_size=2), DataLoader(data, batch_size=2))
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["train/loss/vib_kl"] == pytest.approx(0.5 * m["train/vib_kl"], rel=1e-4)
    assert m["train/vib_kl"] > 0 and m["val/vib_kl"] > 0
    assert "val/loss/vib_kl" not in m  # the KL term is a training loss
    # delta_m = mean over tasks of (-1)^l (M - S) / S * 100, recomputed here from the logged metrics
    signs = {"seg/mIoU": 1, "depth/rmse_pooled": -1, "normals/mean_angle": -1, "edge/odsF_approx": 1, "sal/maxF": 1}
    expected = np.mean([signs[k] * (m[f"val/{k}"] - s) / s * 100 for k, s in baselines.items()])
    assert m["val/mtl/delta_m"] == pytest.approx(expected, rel=1e-4)
    assert m["val/mtl/delta_m_best"] == pytest.approx(m["val/mtl/delta_m"])
    # edge / saliency metrics see probabilities
    out = {"edge": torch.full((1, 1, 4, 4), 10.0)}
    assert torch.all(module.prediction("edge", out["edge"], torch.zeros(1, 1, 4, 4)) > 0.99)


def test_baselines_must_name_trained_tasks():
    net = build_model("upernet", "convnext", "nano", "fp32", ["seg"], num_classes=3, **TINY, shared_decoder=False)
    with pytest.raises(ValueError, match="parts"):
        MultiTaskLitModule(
            net,
            ["seg"],
            {"seg": SegCrossEntropy()},
            optimizer=torch.optim.AdamW,
            metrics={"seg": {"num_classes": 3}},
            baselines={"parts/mIoU": 0.5},
        )


def test_summarize_metrics_recomputes_delta_m():
    from bindense.lit.multitask import summarize_metrics

    logged = {
        "val/seg/mIoU": 0.3,
        "val/seg/pixAcc": 0.8,
        "val/depth/rmse_pooled": 0.5,
        "val/normals/mean_angle": 20.0,
        "val/mtl/delta_m": 1.5,
        "train/loss": 3.0,
    }
    row = summarize_metrics(logged)
    assert row == {"seg/mIoU": 0.3, "depth/rmse_pooled": 0.5, "normals/mean_angle": 20.0, "mtl/delta_m": 1.5}
    base = {"seg/mIoU": 0.25, "depth/rmse_pooled": 0.4}
    expected = np.mean([(0.3 - 0.25) / 0.25 * 100, -(0.5 - 0.4) / 0.4 * 100])
    assert summarize_metrics(logged, base)["mtl/delta_m"] == pytest.approx(expected)
    assert "mtl/delta_m" not in summarize_metrics({"val/seg/mIoU": 0.3}, base)  # lacks the depth baseline
