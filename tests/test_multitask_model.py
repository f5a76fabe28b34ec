"""Multi-task model: forward/backward for every task set, cross-task module maths and shapes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bindense.models import build_model
from bindense.models.cross_task import CrossTaskModule
from bindense.models.spec import MethodSpec
from bindense.tasks import task_names

TINY = dict(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], neck_channels=8, depth_hidden=8)
NYUD = ["seg", "depth", "normals", "edge"]
PASCAL = ["seg", "parts", "sal", "normals", "edge"]
CHANNELS = {"seg": 5, "parts": 4, "depth": 1, "normals": 3, "edge": 1, "sal": 1}


def build(tasks, method="bidense", **kw):
    return build_model(
        "upernet",
        "convnext",
        "nano",
        method,
        tasks,
        num_classes=5,
        num_parts=4,
        max_depth=10.0,
        **TINY,
        **kw,
        shared_decoder=False,
    )


@pytest.mark.parametrize(
    ("tasks", "method", "extras"),
    [
        (NYUD, "bidense", {"vib": {"enabled": True}, "cross_task": {"enabled": True}}),
        (PASCAL, "fp32", {}),
        (PASCAL, "reactnet", {"vib": {"enabled": True, "binary": False}}),
        *[([t], "bidense", {}) for t in task_names()],
    ],
)
def test_forward_backward_every_task_set(tasks, method, extras):
    method_cfg = {"name": "reactnet", "layout": "bnn", "activation": "rsign", "weight": "scaled_sign"}
    model = build(tasks, method_cfg if method == "reactnet" else method, **extras).train()
    x = torch.randn(2, 3, 32, 48)
    out, feats = model(x, return_features=True)
    assert list(out) == tasks
    for t in tasks:
        assert out[t].shape == (2, CHANNELS[t], 32, 48), t
        assert torch.isfinite(out[t]).all()
    if "normals" in tasks:
        torch.testing.assert_close(out["normals"].norm(dim=1), torch.ones(2, 32, 48))
    if "depth" in tasks:
        assert (out["depth"] >= 0).all() and (out["depth"] <= 10).all()
    for name, c in model.feature_channels.items():
        assert feats[name].shape[1] == c, name
    assert {f"decoder.{t}" for t in tasks} <= set(feats)
    loss = sum(o.mean() for o in out.values())
    if model.last_kl is not None:
        loss = loss + model.last_kl
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not any(p.grad.abs().sum() == 0 for n, p in model.heads.named_parameters() if "predictor" in n)


def test_cross_task_module_matches_formula_and_shapes():
    torch.manual_seed(0)
    tasks = ["seg", "depth", "edge"]
    mod = CrossTaskModule(tasks, 4, kernel_size=3)
    assert len(mod.message) == len(mod.gate) == 6  # one per ordered pair
    feats = {t: torch.randn(2, 4, 6, 7) for t in tasks}
    out = mod(feats)
    for t in tasks:
        assert out[t].shape == (2, 4, 6, 7)
        expected = feats[t].clone()
        for a in tasks:
            if a != t:
                key = f"{t}_from_{a}"
                expected += mod.message[key](feats[a]) * torch.sigmoid(mod.gate[key](feats[a]))
        torch.testing.assert_close(out[t], expected)
    with pytest.raises(KeyError, match="edge"):
        mod({"seg": feats["seg"], "depth": feats["depth"]})
    with pytest.raises(ValueError, match="two tasks"):
        CrossTaskModule(["seg"], 4)


@pytest.mark.parametrize("binary", [True, False])
def test_cross_task_binarized_in_c_variant(binary):
    model = build(NYUD, cross_task={"enabled": True, "binary": binary})
    bits = {m.weight_bits for m in model.cross_task.modules() if hasattr(m, "weight_bits")}
    assert bits == ({1} if binary else {32})
    out, feats = model.eval()(torch.randn(1, 3, 32, 32), return_features=True)
    assert {f"cross_task.{t}" for t in NYUD} <= set(feats)


def test_every_conv_follows_the_method():
    model = build(NYUD, vib={"enabled": True})
    spec = MethodSpec.from_config("bidense")
    assert model.spec == spec
    # VIB heads binary, every head's final 1x1 full precision
    assert all(m.weight_bits == 1 for m in model.vib.modules() if hasattr(m, "weight_bits"))
    finals = [m for m in model.heads.modules() if type(m).__name__ == "PredictionConv"]
    assert len(finals) == len(NYUD) and all(isinstance(m, nn.Conv2d) for m in finals)
    fp = build(NYUD, method="fp32", vib={"enabled": True})
    assert all(getattr(m, "weight_bits", 32) == 32 for m in fp.modules())


def test_build_errors():
    with pytest.raises(ValueError, match="tasks"):
        build(["seg", "bogus"])
    with pytest.raises(ValueError, match="num_parts"):
        build_model("upernet", "convnext", "nano", "fp32", ["parts"], **TINY, shared_decoder=False)
    with pytest.raises(ValueError, match="pair"):
        build_model("dpt", "convnext", "nano", "fp32", ["seg"], num_classes=3, shared_decoder=False)
    with pytest.raises(ValueError, match="unknown model options"):
        build(["seg"], bogus_option=1)


def test_dpt_vit_variant():
    model = build_model(
        "dpt",
        "vit",
        "nano",
        "bidense",
        ["seg", "normals"],
        num_classes=4,
        vib={"enabled": True},
        cross_task={"enabled": True},
        embed_dim=48,
        depth=4,
        num_heads=2,
        features=16,
        neck_channels=8,
        shared_decoder=False,
    )
    out, feats = model(torch.randn(2, 3, 56, 56), return_features=True)
    assert out["seg"].shape == (2, 4, 56, 56) and out["normals"].shape == (2, 3, 56, 56)
    assert {"vib.stage4", "decoder.seg", "cross_task.normals"} <= set(feats)
    (out["seg"].mean() + out["normals"].mean() + model.last_kl).backward()


def test_configs_of_older_runs_still_build():
    """A run stored before the one builder names ``build_multitask_model``: it builds the same per-task model."""
    from bindense.utils.checkpoint import build_net

    args = dict(decoder="upernet", backbone="convnext", width="nano", method="bnn", tasks=["seg", "depth"],
                num_classes=3, max_depth=10.0)
    torch.manual_seed(0)
    old = build_net({"_target_": "bindense.models.multitask.build_multitask_model", **args})
    torch.manual_seed(0)
    new = build_model(**args, shared_decoder=False)
    assert list(old.state_dict()) == list(new.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
