"""The binarizer registry: a new binarizer is one decorated class; names are looked up there, with clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from bindense.binary import (
    ACTIVATIONS,
    DAB,
    WEIGHTS,
    ActivationBinarizer,
    AdaBinWeight,
    BinaryConv2d,
    FullPrecision,
    WeightBinarizer,
    make_activation,
    make_weight,
    register_binarizer,
    use_reference,
)
from bindense.binary import quantizers as q
from bindense.models import MethodSpec, build_model


@pytest.fixture
def toy_binarizers():
    """Register a toy activation and weight binarizer for one test only."""

    @register_binarizer("toy_sign")
    class ToySign(ActivationBinarizer):
        """sign(x + 0.5), clipped STE."""

        def forward(self, x: Tensor) -> Tensor:
            return self._zeros(q.SIGN_CLIP(x + 0.5), x + 0.5)

    @register_binarizer("toy_weight")
    class ToyWeight(WeightBinarizer):
        latent_init_std = 0.5

        def forward(self, w: Tensor) -> Tensor:
            return q.SIGN_CLIP(w)

    try:
        yield ToySign, ToyWeight
    finally:
        ACTIVATIONS.pop("toy_sign")
        WEIGHTS.pop("toy_weight")


def test_a_registered_binarizer_builds_a_model(toy_binarizers) -> None:
    toy_sign, toy_weight = toy_binarizers
    assert ACTIVATIONS["toy_sign"] is toy_sign and toy_sign.name == "toy_sign" and toy_sign.bits == 1
    spec = MethodSpec.from_config({"layout": "bnn", "activation": "toy_sign", "weight": "toy_weight"})
    assert spec.is_binary
    model = build_model("upernet", "convnext", "nano", spec, ["seg"], num_classes=3)
    units = [m for m in model.modules() if isinstance(getattr(m, "activation_binarizer", None), toy_sign)]
    assert units and all(isinstance(u.weight_binarizer, toy_weight) for u in units)
    out = model(torch.randn(2, 3, 32, 32))["seg"]
    out.sum().backward()
    assert out.shape == (2, 3, 32, 32)


def test_latent_init_is_the_weight_binarizers_property(toy_binarizers) -> None:
    _, toy_weight = toy_binarizers
    torch.manual_seed(0)
    assert BinaryConv2d(64, 64, 3, weight="toy_weight").weight.std().item() == pytest.approx(0.5, rel=0.05)
    assert BinaryConv2d(64, 64, 3, weight="scaled_sign").weight.std() < 2e-3
    default = BinaryConv2d(64, 64, 3, weight="adabin").weight.std()  # torch's default init, as fp32
    assert default > 1e-2 and AdaBinWeight.latent_init_std is None and FullPrecision.latent_init_std is None


def test_unknown_names_list_the_registered_ones(toy_binarizers) -> None:
    with pytest.raises(ValueError, match=r"binarizer 'ternary' \(method.activation\); registered: .*dab.*toy_sign"):
        make_activation("ternary", 4)
    with pytest.raises(ValueError, match=r"binarizer 'ternary' \(method.weight\); registered: .*scaled_sign"):
        make_weight("ternary")
    with pytest.raises(ValueError, match=r"method.activation='ternary' is not one of \[.*'toy_sign'"):
        MethodSpec.from_config({"activation": "ternary"})


def test_registration_errors() -> None:
    with pytest.raises(ValueError, match="activation binarizer 'dab' is already registered"):
        register_binarizer("dab")(type("Other", (ActivationBinarizer,), {}))
    with pytest.raises(TypeError, match="subclass ActivationBinarizer or WeightBinarizer"):
        register_binarizer("plain")(type("Plain", (torch.nn.Module,), {}))
    assert "plain" not in ACTIVATIONS and "plain" not in WEIGHTS


def test_fp32_is_both_kinds_and_everything_else_one() -> None:
    assert ACTIVATIONS["fp32"] is WEIGHTS["fp32"] is FullPrecision
    for name, cls in ACTIVATIONS.items():
        assert cls is FullPrecision or issubclass(cls, ActivationBinarizer), name
    for name, cls in WEIGHTS.items():
        assert cls is FullPrecision or issubclass(cls, WeightBinarizer), name


def test_one_constructor_per_kind() -> None:
    """make_activation passes the same arguments to every activation binarizer (groups used by DAB only)."""
    for name in ACTIVATIONS:
        b = make_activation(name, 6, channels_last=True, groups=2)
        assert b.bits in (1, 32)
    grouped = make_activation("dab", 6, groups=2)
    assert isinstance(grouped, DAB) and grouped.group_size == 2 and grouped.a.shape == (1, 3, 1, 1)
    for name in WEIGHTS:
        assert make_weight(name, channel_dim=1).bits in (1, 32)


def test_surrogate_switch_is_read_in_one_place() -> None:
    calls = []
    s = q.Surrogate(lambda x: calls.append("lean") or x, lambda x: calls.append("reference") or x)
    s(torch.zeros(1))
    with use_reference():
        s(torch.zeros(1))
    s(torch.zeros(1))
    assert calls == ["lean", "reference", "lean"]


def test_grouped_dab_is_built_once() -> None:
    """The spec passes dab_groups to make_activation: one DAB per unit, drawn from the RNG once."""
    spec = MethodSpec.from_config({"dab_groups": 4})
    torch.manual_seed(0)
    unit = spec.conv(8, 8, 3, padding=1)
    torch.manual_seed(0)
    direct = BinaryConv2d(8, 8, 3, padding=1, activation_groups=4)
    assert unit.activation_binarizer.group_size == 4
    for a, b in zip(unit.state_dict().values(), direct.state_dict().values(), strict=True):
        assert torch.equal(a, b)
