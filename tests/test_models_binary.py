"""The BiDense models are binary where they claim to be: +-alpha activations and +-scale weights in every unit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from bindense.binary import BinaryConv2d, BinaryLinear, cfb
from bindense.models import MatMul, PredictionConv, build_model

CONF = Path(__file__).resolve().parents[1] / "conf"


def assert_two_level(t: torch.Tensor, reduce_dims: tuple[int, ...], what: str) -> None:
    """Every slice (over ``reduce_dims``) holds only +-a for one a > 0."""
    mag = t.abs().amax(dim=reduce_dims, keepdim=True)
    assert (mag > 0).all(), f"{what}: a slice is all zero"
    assert torch.allclose(t.abs(), mag.expand_as(t), rtol=1e-5, atol=0), f"{what}: more than two values in a slice"


def unit_checks(model: nn.Module, x: torch.Tensor) -> int:
    """Hook every binary unit; check its binarized input per (sample, channel) and its weight per out channel."""
    captured: dict[str, list[torch.Tensor]] = {}
    units = {n: m for n, m in model.named_modules() if getattr(m, "is_binary", False) and hasattr(m, "weight")}

    def keep(name: str):
        return lambda mod, inputs, out: captured.setdefault(name, []).append(out.detach()) and None

    handles = [m.activation_binarizer.register_forward_hook(keep(n)) for n, m in units.items()]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    assert units and set(captured) == set(units), "some binary unit never ran"
    for name, unit in units.items():
        for a in captured[name]:  # one entry per call (the shared FPN smoothing runs three times)
            if isinstance(unit, BinaryLinear):  # (B, N, C): per sample and channel over the tokens
                assert_two_level(a, tuple(range(1, a.dim() - 1)), f"{name} input")
            else:  # (B, C, H, W): per sample and channel over space
                assert_two_level(a, (2, 3), f"{name} input")
        w = unit.binary_weight().detach()
        scale_dim = unit.weight_binarizer.channel_dim  # transposed convs: the input axis by default (authors)
        assert_two_level(w, tuple(d for d in range(w.dim()) if d != scale_dim), f"{name} weight")
    return len(units)


@pytest.mark.parametrize("method", ["bidense", "cfb_only"])
def test_upernet_units_are_binary(method: str) -> None:
    torch.manual_seed(0)
    cfg = OmegaConf.load(CONF / "method" / f"{method}.yaml")
    model = build_model("upernet", "convnext", "nano", cfg, ["seg", "depth"], num_classes=4, max_depth=10.0)
    assert unit_checks(model, torch.randn(2, 3, 64, 64)) > 20


def test_dpt_units_are_binary() -> None:
    torch.manual_seed(0)
    model = build_model("dpt", "vit", "nano", "bidense", ["seg"], num_classes=4)
    assert unit_checks(model, torch.randn(2, 3, 56, 56)) > 20


@pytest.mark.parametrize("decoder,backbone", [("upernet", "convnext"), ("dpt", "vit")])
def test_only_stem_and_prediction_are_full_precision(decoder: str, backbone: str) -> None:
    """Every conv / linear / attention matmul is 1-bit x 1-bit except the stem (patch embedding) and final 1x1."""
    model = build_model(decoder, backbone, "nano", "bidense", ["seg", "depth"], num_classes=4, max_depth=10.0)
    fp_ops = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, MatMul)):
            binary = getattr(m, "input_bits", 32) == 1 and getattr(m, "weight_bits", 32) == 1
            if not binary:
                fp_ops.append(name)
    stem = "backbone.downsample_layers.0.0" if backbone == "convnext" else "backbone.patch_embed"
    assert sorted(fp_ops) == sorted([stem, "heads.seg.classifier", "heads.depth.predictor"])
    assert isinstance(model.heads.seg.classifier, PredictionConv)


def test_bidense_unit_forward_is_conv_of_binarized_operands() -> None:
    """A DAB unit's output is BN(conv(+-alpha input, +-scale weight)) + cfb(x), recomputed by hand."""
    torch.manual_seed(0)
    unit = BinaryConv2d(6, 16, 3, padding=1, activation="dab", weight="scaled_sign", bypass="cfb").eval()
    with torch.no_grad():
        unit.activation_binarizer.a.normal_(0, 0.5)
        unit.activation_binarizer.k.normal_(0, 0.5)
        unit.activation_binarizer.b.normal_(0, 0.1)
        unit.weight.normal_(0, 0.1)
    x = torch.randn(2, 6, 5, 7)
    dab = unit.activation_binarizer
    mean = x.mean(dim=(2, 3), keepdim=True)
    s = x - (dab.k * mean + dab.b)
    alpha = torch.exp(dab.a * (s.abs().mean(dim=(2, 3), keepdim=True) - 1))
    a_bin = alpha * torch.where(s >= 0, 1.0, -1.0)
    w = unit.weight
    w_bin = w.abs().mean(dim=(1, 2, 3), keepdim=True) * torch.where(w >= 0, 1.0, -1.0)
    expected = unit.norm(F.conv2d(a_bin, w_bin, padding=1)) + cfb(x, 16)
    with torch.no_grad():
        assert torch.allclose(unit(x), expected, atol=1e-5)
        dab.b.zero_()
        zeros = dab(torch.zeros(1, 6, 2, 2))
    assert (zeros > 0).all()  # sign(0) = +1
