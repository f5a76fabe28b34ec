"""Every method preset x {upernet, dpt} x {seg, depth} builds at nano width, runs forward and backward on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bindense.models import MethodSpec, build_model

CONF = Path(__file__).resolve().parents[1] / "conf"
METHODS = ["fp32", "fp32_scratch", "bnn", "reactnet", "adabin", "bisrnet", "bidense", "cfb_only"]
ARCHS = {"upernet": ("convnext", (64, 64)), "dpt": ("vit", (60, 74))}  # DPT: not a multiple of 28


def method_cfg(name: str):
    return OmegaConf.load(CONF / "method" / f"{name}.yaml")


def images(batch: int, size: tuple[int, int]) -> torch.Tensor:
    """Noise images with a per-sample offset and contrast (so that global statistics differ per sample)."""
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(batch, 1, 1, 1, generator=g) + 0.5
    shift = torch.randn(batch, 1, 1, 1, generator=g)
    return torch.randn(batch, 3, *size, generator=g) * scale + shift


def check_grads(model: torch.nn.Module) -> None:
    """Every trainable parameter gets a finite gradient; every binary latent weight a nonzero one somewhere."""
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
    for name, m in model.named_modules():
        if getattr(m, "weight_bits", 32) == 1 and isinstance(getattr(m, "weight", None), torch.nn.Parameter):
            assert m.weight.grad.abs().sum() > 0, f"zero gradient on the binary weight of {name}"


@pytest.mark.parametrize("task", ["seg", "depth"])
@pytest.mark.parametrize("decoder", ["upernet", "dpt"])
@pytest.mark.parametrize("method", METHODS)
def test_forward_backward(method: str, decoder: str, task: str) -> None:
    torch.manual_seed(0)
    backbone, size = ARCHS[decoder]
    model = build_model(decoder, backbone, "nano", method_cfg(method), [task], num_classes=5, max_depth=10.0)
    x = images(2, size)
    out, feats = model(x, return_features=True)
    assert set(out) == {task}
    y = out[task]
    assert y.shape == ((2, 5, *size) if task == "seg" else (2, 1, *size))
    if task == "depth":
        assert (y > 0).all() and (y < 10.0).all()
    assert set(feats) == {"backbone.stage1", "backbone.stage2", "backbone.stage3", "backbone.stage4", "decoder"}
    for name, ch in model.feature_channels.items():
        assert feats[name].shape[:2] == (2, ch)
    (y * torch.randn_like(y)).mean().backward()
    check_grads(model)


@pytest.mark.parametrize("decoder", ["upernet", "dpt"])
def test_two_tasks_share_decoder(decoder: str) -> None:
    backbone, size = ARCHS[decoder]
    model = build_model(
        decoder, backbone, "nano", method_cfg("bidense"), ["seg", "depth"], num_classes=3, max_depth=80.0
    )
    out = model(images(2, size))
    assert out["seg"].shape == (2, 3, *size) and out["depth"].shape == (2, 1, *size)
    assert list(model.heads) == ["seg", "depth"]
    sum(o.mean() for o in out.values()).backward()
    check_grads(model)


def test_feature_strides_upernet() -> None:
    model = build_model("upernet", "convnext", "nano", "bidense", ["seg"], num_classes=4)
    _, feats = model(images(2, (64, 96)), return_features=True)
    for i, stride in enumerate((4, 8, 16, 32), start=1):
        assert feats[f"backbone.stage{i}"].shape[-2:] == (64 // stride, 96 // stride)
    assert feats["decoder"].shape[-2:] == (16, 24)  # the neck at stride 4, before the upsampling


def test_vit_resizes_to_multiples_of_28_floored() -> None:
    model = build_model("dpt", "vit", "nano", "bidense", ["depth"], max_depth=10.0)
    out, feats = model(images(1, (83, 90)), return_features=True)  # floored: 56 x 84, grid 4 x 6
    assert feats["backbone.stage4"].shape[-2:] == (4, 6)
    assert feats["decoder"].shape[-2:] == (32, 48)
    assert out["depth"].shape == (1, 1, 83, 90)


def test_ablation_overrides_on_bidense_layout() -> None:
    base = method_cfg("bidense")
    for activation in ("rsign", "dab"):
        for bypass in ("none", "cfb"):
            cfg = OmegaConf.merge(base, {"activation": activation, "bypass": bypass})
            model = build_model("upernet", "convnext", "nano", cfg, ["seg"], num_classes=3)
            units = [m for m in model.modules() if getattr(m, "is_binary", False)]
            assert units and all(u.bypass in (bypass, "none") for u in units)
            assert sum(u.bypass == "cfb" for u in units) == (0 if bypass == "none" else len(units))
            names = {type(u.activation_binarizer).__name__ for u in units}
            assert names == {"RSign" if activation == "rsign" else "DAB"}
            model(images(2, (64, 64)))["seg"].mean().backward()


def test_cfb_only_is_bidense_with_rsign() -> None:
    a = MethodSpec.from_config(method_cfg("cfb_only"))
    b = MethodSpec.from_config(method_cfg("bidense")).with_(name="cfb_only", activation="rsign")
    assert a == b


def test_method_configs_round_trip() -> None:
    for name in METHODS:
        cfg = method_cfg(name)
        spec = MethodSpec.from_config(cfg)
        assert spec.name == name and spec.layout == cfg.layout
    with pytest.raises(ValueError, match="unknown method keys"):
        MethodSpec.from_config({"layout": "bidense", "actvation": "dab"})
    with pytest.raises(ValueError, match="method.activation"):
        MethodSpec.from_config({"layout": "bidense", "activation": "nope"})


def test_build_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="pairs with backbone"):
        build_model("upernet", "vit", "nano", "bidense", ["seg"], num_classes=3)
    with pytest.raises(ValueError, match="pairs with backbone"):
        build_model("dpt", "convnext", "nano", "bidense", ["seg"], num_classes=3)
    with pytest.raises(ValueError, match="unknown width"):
        build_model("upernet", "convnext", "huge", "bidense", ["seg"], num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("upernet", "convnext", "nano", "bidense", ["seg"])
    with pytest.raises(ValueError, match="max_depth"):
        build_model("upernet", "convnext", "nano", "bidense", ["depth"])
    with pytest.raises(ValueError, match=r"task .normal. \(data.tasks\); registered: seg, parts, depth, normals"):
        build_model("upernet", "convnext", "nano", "bidense", ["normal"])
    with pytest.raises(ValueError, match="distinct"):
        build_model("upernet", "convnext", "nano", "bidense", ["seg", "seg"], num_classes=3)
    with pytest.raises(ValueError, match="cross_task needs one decoder per task"):
        build_model("upernet", "convnext", "nano", "bidense", ["seg"], num_classes=3, cross_task={"enabled": True})
    with pytest.raises(ValueError, match="unknown model options"):
        build_model("upernet", "convnext", "nano", "bidense", ["seg"], num_classes=3, embed_dim=8)


def test_hydra_model_config_instantiates() -> None:
    """conf/model/*.yaml through Hydra with the real train.yaml (skipped until the data configs exist)."""
    if not (CONF / "data" / "synthetic.yaml").exists():
        pytest.skip("conf/data/synthetic.yaml not there yet")
    import hydra

    for model_name in ("upernet_convnext", "dpt_vit_s14"):
        with hydra.initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra.compose(config_name="train", overrides=[f"model={model_name}", "method=reactnet"])
        assert cfg.model.width == "nano"
        model = hydra.utils.instantiate(cfg.model)
        assert model.spec.name == "reactnet"
        assert set(model.tasks) == set(cfg.data.tasks)
