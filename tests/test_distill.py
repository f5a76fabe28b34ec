"""Distillation: losses vs numpy, teacher loading from project checkpoints (and its errors), frozen teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from bindense.distill import (
    Distiller,
    attention_transfer,
    load_teacher,
    logit_kd,
    normalized_mse,
)
from bindense.lit.dense import DenseLitModule
from bindense.lit.losses import SegCrossEntropy
from bindense.models import build_model
from bindense.utils.checkpoint import CheckpointError

TINY = dict(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], neck_channels=8, depth_hidden=8)


def model_cfg(method: str = "fp32", tasks=("seg", "depth"), **over) -> dict:
    return {
        "_target_": "bindense.models.build_model",
        "decoder": "upernet",
        "backbone": "convnext",
        "width": "nano",
        "shared_decoder": False,
        "method": {"name": method, "layout": method},
        "tasks": list(tasks),
        "num_classes": 3,
        "max_depth": 10.0,
        "pretrained_ckpt": None,
        **TINY,
        **over,
    }


def build_from(cfg: dict) -> nn.Module:
    kw = {k: v for k, v in cfg.items() if k != "_target_"}
    return build_model(**kw)


def write_run(root: Path, cfg: dict, *, store_config: bool = True, run_config: bool = False, net=None) -> Path:
    """A run directory as train.py leaves it: checkpoints/last.ckpt (+ config.yaml)."""
    net = net if net is not None else build_from(cfg)
    ckpt = {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 0}
    if store_config:
        ckpt["bindense_config"] = {"model": cfg}
    path = root / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    if run_config:
        (root / "config.yaml").write_text(yaml.safe_dump({"model": cfg, "seed": 1}))
    return path


# ----------------------------------------------------------------------------- losses
def test_normalized_mse_matches_numpy_and_is_scale_free():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    t = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    a, b = s.numpy(), t.numpy()
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    expected = ((a - b) ** 2).sum(1).mean()
    assert float(normalized_mse(s, t)) == pytest.approx(expected, rel=1e-10)
    assert float(normalized_mse(s * 50.0, t * 0.1)) == pytest.approx(expected, rel=1e-10)
    assert float(normalized_mse(s, s)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="channels"):
        normalized_mse(s, t[:, :3])


def test_attention_transfer_matches_numpy_and_resizes():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 6, 4, 4, generator=g, dtype=torch.float64)
    t = torch.randn(2, 9, 4, 4, generator=g, dtype=torch.float64)  # channel counts may differ

    def att(x):
        a = (x**2).mean(1).reshape(x.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    expected = ((att(s.numpy()) - att(t.numpy())) ** 2).sum(1).mean()
    assert float(attention_transfer(s, t)) == pytest.approx(expected, rel=1e-10)
    big = torch.nn.functional.interpolate(t, size=(8, 8), mode="bilinear")
    assert torch.isfinite(attention_transfer(s, big))


def test_logit_kd_matches_numpy():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    t = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    temp = 3.0

    def log_softmax(x):
        x = x / temp
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    ls, lt = log_softmax(s.numpy()), log_softmax(t.numpy())
    kl = (np.exp(lt) * (lt - ls)).sum(1)
    assert float(logit_kd(s, t, temp)) == pytest.approx(kl.mean() * temp**2, rel=1e-10)
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[0, 1:, :2] = True
    assert float(logit_kd(s, t, temp, mask)) == pytest.approx(kl[mask.numpy()].mean() * temp**2, rel=1e-10)
    assert float(logit_kd(t, t, temp)) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- teacher loading
def test_load_teacher_from_checkpoint_config(tmp_path):
    cfg = model_cfg()
    source = build_from(cfg)
    path = write_run(tmp_path / "run", cfg, net=source)
    teacher, run_cfg = load_teacher(path)
    assert run_cfg.model.width == "nano"
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    for (k, a), b in zip(source.state_dict().items(), teacher.state_dict().values()):
        assert torch.equal(a, b), k


def test_load_teacher_from_run_dir_config(tmp_path):
    path = write_run(tmp_path / "run", model_cfg(), store_config=False, run_config=True)
    teacher, run_cfg = load_teacher(path)
    assert run_cfg.seed == 1 and isinstance(teacher, nn.Module)


def test_teacher_errors(tmp_path):
    with pytest.raises(CheckpointError, match="teacher_ckpt"):
        load_teacher(None)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_teacher(tmp_path / "nope.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_teacher(junk)
    no_cfg = write_run(tmp_path / "nocfg", model_cfg(), store_config=False)
    with pytest.raises(CheckpointError, match="no run config"):
        load_teacher(no_cfg)
    # the weights come from a wider model than the stored config builds
    wide = build_from(model_cfg(dims=[16, 32, 64, 128]))
    mismatched = write_run(tmp_path / "mismatch", model_cfg(), net=wide)
    with pytest.raises(CheckpointError, match="does not match"):
        load_teacher(mismatched)
    binary = write_run(tmp_path / "binary", model_cfg("bidense"))
    with pytest.raises(CheckpointError, match="full precision"):
        load_teacher(binary)
    teacher, _ = load_teacher(binary, require_full_precision=False)
    assert not teacher.training


# ----------------------------------------------------------------------------- distiller
def lit_module(net: nn.Module, tasks=("seg", "depth"), module_cls=None, **kw) -> DenseLitModule:
    from bindense.lit.multitask import DepthL1Loss, MultiTaskLitModule

    module_cls = module_cls or MultiTaskLitModule
    losses = {"seg": SegCrossEntropy(), "depth": DepthL1Loss()}
    metrics = {"seg": {"num_classes": 3}, "depth": {"max_depth": 10.0, "protocol": "pooled"}}
    return module_cls(
        net,
        list(tasks),
        {t: losses[t] for t in tasks},
        optimizer=torch.optim.AdamW,
        metrics={t: metrics[t] for t in tasks},
        **kw,
    )


def batch(tasks=("seg", "depth"), n=2, h=32, w=32):
    g = torch.Generator().manual_seed(3)
    out = {"image": torch.randn(n, 3, h, w, generator=g)}
    if "seg" in tasks:
        out["seg"] = torch.randint(0, 3, (n, h, w), generator=g)
    if "depth" in tasks:
        out["depth"] = torch.rand(n, 1, h, w, generator=g) * 9 + 0.5
    return out


def test_teacher_frozen_no_grads_and_always_eval(tmp_path):
    path = write_run(tmp_path / "teacher", model_cfg())
    student = build_from(model_cfg("bidense"))
    module = lit_module(student, distiller=Distiller(teacher_ckpt=str(path), feature_points=["backbone.*"]))
    teacher = module.distiller.teacher
    module.train()
    assert module.training and module.net.training and not teacher.training
    _, terms, total = module.shared_step(batch(), "train")
    assert "loss/distill" in terms and terms["loss/distill"].requires_grad
    total.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())
    # the teacher is outside the student's state, parameters and optimizer, but moves with it
    assert not any(k.startswith("distiller") for k in module.state_dict())
    ids = {id(p) for p in teacher.parameters()}
    assert not ids & {id(p) for p in module.parameters()}
    module.to(torch.float64)
    assert next(teacher.parameters()).dtype == torch.float64
    module.train()
    assert not teacher.training


def test_distiller_points_map_and_errors():
    teacher = build_from(model_cfg())
    student = build_from(model_cfg("bidense", vib={"enabled": True}))
    x = batch()["image"]
    outs, feats = student(x, return_features=True)
    points = ["vib.stage4", "decoder.*"]
    ok = Distiller(teacher=teacher, feature_points=points, feature_map={"vib.stage4": "backbone.stage4"})
    terms = ok(x, feats, outs)
    assert set(ok.last_terms) == {"feature/vib.stage4", "feature/decoder.seg", "feature/decoder.depth"}
    assert terms["loss/distill"].ndim == 0 and float(terms["loss/distill"].detach()) > 0
    with pytest.raises(KeyError, match="matches no student feature"):
        Distiller(teacher=teacher, feature_points=["bogus.*"])(x, feats, outs)
    with pytest.raises(KeyError, match="teacher has no feature"):
        Distiller(teacher=teacher, feature_points=["vib.stage4"])(x, feats, outs)
    wide_teacher = build_from(model_cfg(dims=[16, 32, 64, 128]))
    with pytest.raises(ValueError, match="channels"):
        Distiller(teacher=wide_teacher, feature_points=["backbone.stage1"])(x, feats, outs)
    at = Distiller(teacher=wide_teacher, feature_points=["backbone.*"], feature_loss="at")(x, feats, outs)
    assert torch.isfinite(at["loss/distill"])
    kd = Distiller(teacher=teacher, mode="logit", temperature=2.0)(x, None, outs)
    t_out = teacher(x)
    expected = float(logit_kd(outs["seg"], t_out["seg"], 2.0).detach())
    assert float(kd["loss/distill"].detach()) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="mode"):
        Distiller(teacher=teacher, mode="bogus")


def test_distiller_is_a_constructor_argument(tmp_path):
    path = write_run(tmp_path / "teacher", model_cfg())
    module = lit_module(build_from(model_cfg("bidense")))
    assert module.distiller is None and not module.return_features
    module = lit_module(build_from(model_cfg("bidense")), distiller=Distiller(teacher_ckpt=str(path), mode="both"))
    assert module.return_features and isinstance(module.distiller, Distiller)
    _, terms, _ = module.shared_step(batch(), "train")
    assert set(terms) >= {"seg", "depth", "loss/distill"}
    _, terms, _ = module.shared_step(batch(), "val")
    assert "loss/distill" not in terms  # training only


def test_build_module_passes_the_hydra_distiller(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from bindense.lit.pipeline import build_module

    conf = Path(__file__).resolve().parents[1] / "conf"
    monkeypatch.setenv("PROJECT_ROOT", str(conf.parent))
    path = write_run(tmp_path / "teacher", model_cfg())
    overrides = [
        "experiment=bimtdp_synthetic",
        "distill=feature",
        f"distill.teacher_ckpt={path}",
        "distill.schedule=linear_decay",
        "distill.weight=0.5",
    ]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        plain = compose("train", overrides=["experiment=bimtdp_synthetic"])
    module = build_module(cfg)
    assert isinstance(module.distiller, Distiller) and module.return_features
    assert (module.distiller.schedule, module.distiller.weight) == ("linear_decay", 0.5)
    assert not any(k.startswith("distiller") for k in module.state_dict())
    assert build_module(plain).distiller is None


def test_single_task_dense_module_distills(tmp_path):
    cfg = {
        "_target_": "bindense.models.build_model",
        "decoder": "upernet",
        "backbone": "convnext",
        "width": "nano",
        "method": {"name": "fp32", "layout": "fp32"},
        "tasks": ["seg"],
        "num_classes": 3,
        "pretrained_ckpt": None,
        "dims": [8, 16, 32, 64],
        "depths": [1, 1, 1, 1],
        "neck_channels": 8,
    }
    kw = {k: v for k, v in cfg.items() if k != "_target_"}
    path = write_run(tmp_path / "teacher", cfg, net=build_model(**kw))
    student = build_model(**{**kw, "method": "bidense"})
    distiller = Distiller(teacher_ckpt=str(path), feature_points=["backbone.*", "decoder"])
    module = lit_module(student, tasks=("seg",), module_cls=DenseLitModule, distiller=distiller)
    _, terms, total = module.shared_step(batch(("seg",)), "train")
    assert "loss/distill" in terms
    assert float(total.detach()) == pytest.approx(float((terms["seg"] + terms["loss/distill"]).detach()), rel=1e-5)


# ----------------------------------------------------------------------------- registries and schedule
def test_feature_loss_registry_selects_by_name():
    from bindense.distill import FEATURE_LOSSES, feature_loss, register_feature_loss

    assert {"mse", "at"} <= set(FEATURE_LOSSES)
    s, t = torch.ones(1, 2, 3, 3), torch.zeros(1, 2, 3, 3)

    @register_feature_loss("toy_l1")
    def toy_l1(student, teacher):
        return (student - teacher).abs().mean()

    try:
        assert float(feature_loss(s, t, "toy_l1")) == 1.0
        teacher = build_from(model_cfg())
        x = batch()["image"]
        outs, feats = build_from(model_cfg("bidense"))(x, return_features=True)
        d = Distiller(teacher=teacher, feature_points=["backbone.stage1"], feature_loss="toy_l1", weight=2.0)
        expected = (feats["backbone.stage1"] - teacher(x, return_features=True)[1]["backbone.stage1"]).abs().mean()
        got = d(x, feats, outs)["loss/distill"].detach()
        assert float(got) == pytest.approx(2.0 * float(expected.detach()), rel=1e-5)
        with pytest.raises(ValueError, match="already registered"):
            register_feature_loss("toy_l1")(toy_l1)
    finally:
        FEATURE_LOSSES.pop("toy_l1")
    with pytest.raises(ValueError, match=r"distill.feature_loss\); registered: mse, at"):
        Distiller(teacher=teacher, feature_loss="toy_l1")


@pytest.mark.parametrize(
    ("name", "warmup", "values"),
    [
        ("constant", 0.0, [1.0, 1.0, 1.0, 1.0]),
        ("linear_decay", 0.0, [1.0, 0.75, 0.5, 0.0]),
        ("cosine_decay", 0.0, [1.0, (1 + np.cos(np.pi / 4)) / 2, 0.5, 0.0]),
        ("warmup", 0.5, [0.0, 0.5, 1.0, 1.0]),
        ("warmup", 0.0, [1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_schedule_values(name, warmup, values):
    from bindense.distill import schedule_factor

    got = [schedule_factor(name, p, warmup) for p in (0.0, 0.25, 0.5, 1.0)]
    assert got == pytest.approx(values)
    assert schedule_factor(name, 1.5, warmup) == pytest.approx(values[-1])  # progress clamped to [0, 1]


def test_schedule_scales_the_loss_and_module_progress():
    from types import SimpleNamespace

    teacher = build_from(model_cfg())
    x = batch()["image"]
    outs, feats = build_from(model_cfg("bidense"))(x, return_features=True)
    d = Distiller(teacher=teacher, mode="both", schedule="linear_decay", feature_points=["decoder.*"])
    full = float(d(x, feats, outs, progress=0.0)["loss/distill"].detach())
    assert full > 0
    assert float(d(x, feats, outs, progress=0.75)["loss/distill"].detach()) == pytest.approx(0.25 * full, rel=1e-5)
    assert float(d(x, feats, outs, progress=1.0)["loss/distill"].detach()) == 0.0
    with pytest.raises(ValueError, match="distill.schedule"):
        Distiller(teacher=teacher, schedule="bogus")
    with pytest.raises(ValueError, match="distill.warmup"):
        Distiller(teacher=teacher, schedule="warmup", warmup=2.0)
    module = lit_module(build_from(model_cfg("bidense")), distiller=d)
    assert module.train_progress() == 0.0  # no trainer
    module._trainer = SimpleNamespace(estimated_stepping_batches=40, global_step=10)
    assert module.train_progress() == 0.25
