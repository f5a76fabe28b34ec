"""The DPT / ViT rows against the authors' code, and sign(0) (docs/METHODS.md), on hand-checkable inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from bindense.binary import (
    ACTIVATIONS,
    DAB,
    BiViTSignActivation,
    BiViTSignWeight,
    CenteredScaledSignWeight,
    SignActivation,
    make_activation,
    make_weight,
    set_sign_zero,
    use_reference,
)
from bindense.binary import reference as ref
from bindense.binary.base import _SignZero
from bindense.export.packed import decode_binary_weight, encode_binary_weight, export_packed
from bindense.models import MethodSpec, build_model
from bindense.models.vit import TokenPReLU, ViT, floor_to_multiple, interpolate_pos_grid

CONF = Path(__file__).resolve().parents[1] / "conf"


def spec(name: str, **changes) -> MethodSpec:
    return MethodSpec.from_config({**OmegaConf.load(CONF / "method" / f"{name}.yaml"), **changes})


# ---- 1. transposed-conv weight scale ----
W_T = torch.tensor([[0.1, -0.2, 0.3], [-0.4, 0.5, -0.6]]).reshape(2, 3, 1, 1)  # (C_in, C_out, 1, 1)


@pytest.mark.parametrize(
    "axis,scales",
    [("input", [[0.2, 0.2, 0.2], [0.5, 0.5, 0.5]]), ("output", [[0.25, 0.35, 0.45], [0.25, 0.35, 0.45]])],
)
def test_transposed_scale_axis(axis: str, scales: list[list[float]]) -> None:
    unit = spec("bidense", transpose_scale=axis).conv_transpose(2, 3, 1, stride=1)
    with torch.no_grad():
        unit.weight.copy_(W_T)
    signs = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]])
    torch.testing.assert_close(unit.binary_weight().reshape(2, 3), signs * torch.tensor(scales))
    encoding, parts = encode_binary_weight(unit.binary_weight().detach(), unit.weight_binarizer.channel_dim)
    assert encoding == "scaled_sign" and parts["scale"].numel() == (2 if axis == "input" else 3)
    decoded = decode_binary_weight(encoding, parts, [2, 3, 1, 1], unit.weight_binarizer.channel_dim, torch.float32)
    assert torch.equal(decoded, unit.binary_weight().detach())


def test_dpt_up_defaults_to_the_input_axis() -> None:
    model = build_model("dpt", "vit", "nano", spec("bidense"), ["seg"], num_classes=3)
    ups = [model.decoder.resize[0], model.decoder.resize[1]]
    assert [u.weight_binarizer.channel_dim for u in ups] == [0, 0]
    assert MethodSpec.from_config({"layout": "bidense"}).transpose_scale == "input"


# ---- 2. ViT binary linear scale: mean|W| of the RAW row ----
ROW = torch.tensor([[1.0, 2.0, 3.0, -2.0]])  # mean 1, centred [0, 1, 2, -3], raw mean|W| 2 (centred: 1.5)


@pytest.mark.parametrize(
    "cls,grad", [(CenteredScaledSignWeight, [0.5, 0.5, -0.5, -0.5]), (BiViTSignWeight, [1.5, -0.5, -0.5, -0.5])]
)
@pytest.mark.parametrize("reference", [False, True])
def test_linear_scale_is_raw_mean_abs(cls, grad: list[float], reference: bool) -> None:
    w = ROW.clone().requires_grad_(True)
    with use_reference(reference):
        wb = cls()(w)
    torch.testing.assert_close(wb, torch.tensor([[2.0, 2.0, 2.0, -2.0]]))
    # STE: |c| <= 1 -> [1, 1, 0, 0]; BiViT: |c| < 1, times the scale 2 -> [2, 0, 0, 0]; then through the centring
    wb.sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([grad]))


def test_bivit_activation_ste_window_is_open() -> None:
    x = torch.tensor([-1.0, -0.5, 1.0, 1.5], requires_grad=True)
    out = BiViTSignActivation()(x)
    torch.testing.assert_close(out, torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 1.0, 0.0, 0.0]))  # sign: [1, 1, 1, 0]


# ---- 3. DPT input size: floor to a multiple of 28 ----
@pytest.mark.parametrize(
    "size,expected",
    [
        ((480, 640), (476, 616)),
        ((352, 1216), (336, 1204)),
        ((416, 544), (392, 532)),
        ((352, 704), (336, 700)),
        ((480, 480), (476, 476)),
        ((20, 56), (28, 56)),
    ],
)
def test_dpt_input_size_is_floored(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert tuple(floor_to_multiple(s, 28) for s in size) == expected
    vit = ViT(spec("bidense"), embed_dim=24, depth=4, num_heads=2, pos_grid=4)
    assert vit.input_size(*size) == expected


def test_vit_runs_at_the_floored_size() -> None:
    vit = ViT(spec("bidense"), embed_dim=24, depth=4, num_heads=2, pos_grid=4)
    feats = vit(torch.randn(1, 3, 83, 111))  # -> 56 x 84 -> 4 x 6 patches (rounding would give 84 x 112)
    assert feats["stage4"].shape == (1, 24, 4, 6)


# ---- 4. position-embedding interpolation with DINOv2's 0.1 offset ----
def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    def near(x: float) -> float:
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _bicubic_rows(grid: np.ndarray, out: int, scale: float) -> np.ndarray:
    """Independent 1-D bicubic (Keys a = -0.75, borders clamped) along axis 0, source (i + 0.5) / scale - 0.5."""
    n = grid.shape[0]
    rows = []
    for i in range(out):
        src = (i + 0.5) / scale - 0.5
        base = math.floor(src)
        w = _cubic_weights(src - base)
        rows.append(sum(wk * grid[min(max(base - 1 + k, 0), n - 1)] for k, wk in enumerate(w)))
    return np.stack(rows)


def test_pos_grid_37_to_34_with_offset() -> None:
    torch.manual_seed(0)
    grid = torch.randn(1, 2, 37, 37, dtype=torch.float64)
    out = interpolate_pos_grid(grid, 34, 34)
    assert out.shape == (1, 2, 34, 34)
    scale = 34.1 / 37
    g = grid[0].numpy()
    expected = np.stack([_bicubic_rows(_bicubic_rows(c, 34, scale).T, 34, scale).T for c in g])
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=0, atol=1e-12)
    by_size = torch.nn.functional.interpolate(grid, size=(34, 34), mode="bicubic", align_corners=False)
    assert (out - by_size).abs().max() > 1e-3  # the offset matters


# ---- 5. ViT MLP activation ----
def test_vit_mlp_released_and_paper_variants() -> None:
    released = build_model("dpt", "vit", "nano", spec("bidense"), ["seg"], num_classes=3)
    mlp = released.backbone.blocks[0].mlp
    assert isinstance(mlp.act, nn.GELU)
    assert type(mlp.fc1.activation_binarizer) is BiViTSignActivation
    assert type(released.backbone.blocks[0].attn.q_binarizer) is BiViTSignActivation
    assert isinstance(mlp.fc1.weight_binarizer, BiViTSignWeight)
    paper = spec("bidense", vit_mlp_act="prelu", linear_activation="rsign", linear_weight="centered_sign")
    mlp = build_model("dpt", "vit", "nano", paper, ["seg"], num_classes=3).backbone.blocks[0].mlp
    assert isinstance(mlp.act, TokenPReLU)
    assert type(mlp.fc1.weight_binarizer) is CenteredScaledSignWeight


def test_token_prelu_values() -> None:
    act = TokenPReLU(2)
    with torch.no_grad():
        act.bias.copy_(torch.tensor([1.0, -1.0]))
        act.prelu.weight.copy_(torch.tensor([0.5, 0.25]))
    x = torch.tensor([[[-3.0, 2.0], [0.0, 0.0]]])  # (B, N, C)
    torch.testing.assert_close(act(x), torch.tensor([[[-1.0, 1.0], [1.0, -0.25]]]))


# ---- 6. sign(0) ----
def test_sign_zero_activation_values_and_gradients() -> None:
    x = torch.tensor([-0.5, 0.0, 0.5, 2.0])
    for mode, values in (("plus", [-1.0, 1.0, 1.0, 1.0]), ("zero", [-1.0, 0.0, 1.0, 1.0])):
        xr = x.clone().requires_grad_(True)
        out = set_sign_zero(SignActivation(), mode)(xr)
        torch.testing.assert_close(out, torch.tensor(values))
        out.sum().backward()
        torch.testing.assert_close(xr.grad, torch.tensor([1.0, 1.0, 1.0, 0.0]))


def _run(module: nn.Module, x: torch.Tensor, reference: bool) -> tuple[torch.Tensor, ...]:
    xr = x.clone().requires_grad_(True)
    with use_reference(reference):
        out = module(xr)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    return (out.detach(), xr.grad, *(p.grad for p in module.parameters()))


def _torch_sign_oracle(module: nn.Module, x: torch.Tensor, monkeypatch) -> tuple[torch.Tensor, ...]:
    """The naive reference with ``torch.sign`` in place of the +-1 sign: the authors' code, zeros included."""
    with monkeypatch.context() as m:
        m.setattr(ref, "_hard_sign", torch.sign)
        return _run(set_sign_zero(module, "plus"), x, reference=True)


def _fresh(factory, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    module = factory()
    if isinstance(module, DAB):  # s = x - (k mean(x) + b) is exactly 0 where x == 0 when k = b = 0
        nn.init.zeros_(module.k)
    return module


@pytest.mark.parametrize("name", sorted(set(ACTIVATIONS) - {"fp32"}))
@pytest.mark.parametrize("reference", [False, True])
def test_sign_zero_activations_equal_torch_sign(name: str, reference: bool, monkeypatch) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    x[:, :, 1, 2] = 0.0
    plus = _run(_fresh(lambda: make_activation(name, 3)), x, reference)
    zero = _run(set_sign_zero(_fresh(lambda: make_activation(name, 3)), "zero"), x, reference)
    oracle = _torch_sign_oracle(_fresh(lambda: make_activation(name, 3)), x, monkeypatch)
    assert not torch.equal(plus[0], zero[0])
    torch.testing.assert_close(zero[0][:, :, 1, 2], torch.zeros(2, 3))
    torch.testing.assert_close(zero[1], plus[1], rtol=0, atol=0)  # the input's surrogate gradient is unchanged
    for got, want in zip(zero, oracle, strict=True):  # values and every gradient: torch.sign semantics
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["sign", "scaled_sign", "centered_sign", "bivit_sign", "adabin"])
@pytest.mark.parametrize("reference", [False, True])
def test_sign_zero_weights_equal_torch_sign(name: str, reference: bool, monkeypatch) -> None:
    torch.manual_seed(0)
    half = torch.randint(1, 12, (4, 13)) / 16.0  # dyadic: each row [v, -v, 0] has mean exactly 0
    w = torch.cat([half, -half, torch.zeros(4, 1)], dim=1)[:, torch.randperm(27)].reshape(4, 3, 3, 3)
    zero = _run(set_sign_zero(make_weight(name), "zero"), w, reference)
    plus = _run(make_weight(name), w, reference)
    oracle = _torch_sign_oracle(make_weight(name), w, monkeypatch)
    assert not torch.equal(plus[0], zero[0])
    for got, want in zip(zero, oracle, strict=True):
        torch.testing.assert_close(got, want)
    if name != "adabin":  # detached scale: the gradient is exactly the plus-mode one
        torch.testing.assert_close(zero[1], plus[1], rtol=0, atol=0)


@pytest.mark.parametrize(
    "name,expected",
    [("sign", [0.0, 1.0, -1.0, 1.0]), ("scaled_sign", [0.0, 0.5, -0.5, 0.5])],
)
def test_sign_zero_weight_values(name: str, expected: list[float]) -> None:
    w = torch.tensor([[0.0, 0.5, -1.0, 0.5]])  # mean|W| = 0.5
    torch.testing.assert_close(set_sign_zero(make_weight(name), "zero")(w), torch.tensor([expected]))
    torch.testing.assert_close(make_weight(name)(w), torch.tensor([[abs(expected[1])] + expected[1:]]))


def test_sign_zero_centred_linear_weight() -> None:
    out = set_sign_zero(CenteredScaledSignWeight(), "zero")(ROW)
    torch.testing.assert_close(out, torch.tensor([[0.0, 2.0, 2.0, -2.0]]))  # W == mean(W) -> 0


@pytest.mark.parametrize("model", [("upernet", "convnext"), ("dpt", "vit")])
def test_sign_zero_reaches_every_binarizer(model: tuple[str, str]) -> None:
    net = build_model(*model, "nano", spec("bnn", sign_zero="zero"), ["seg"], num_classes=3)
    modes = {m.sign_zero for m in net.modules() if isinstance(m, _SignZero)}
    assert modes == {"zero"}
    assert {
        m.sign_zero for m in build_model(*model, "nano", spec("bnn"), ["seg"], 3).modules() if isinstance(m, _SignZero)
    } == {"plus"}


def test_sign_zero_model_is_not_exported(tmp_path: Path) -> None:
    net = build_model("upernet", "convnext", "nano", spec("bnn", sign_zero="zero"), ["seg"], num_classes=3)
    with pytest.raises(ValueError, match="sign_zero=zero"):
        export_packed(net, tmp_path / "m.bdn")
    with pytest.raises(ValueError, match="method.sign_zero='half'"):
        spec("bnn", sign_zero="half")


def test_bnn_neck_meets_relu_zeros() -> None:
    """The BNN neck takes a ReLU output: sign(0) = +1 makes its input constant, torch.sign keeps {0, 1}."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for mode, values in (("plus", [1.0]), ("zero", [0.0, 1.0])):
        torch.manual_seed(0)
        net = build_model("upernet", "convnext", "nano", spec("bnn", sign_zero=mode), ["seg"], num_classes=3)
        net.eval()
        seen = {}
        net.decoder.neck.activation_binarizer.register_forward_hook(lambda m, i, o, seen=seen: seen.__setitem__("a", o))
        with torch.no_grad():
            interior = net(x)["seg"][..., 8:-8, 8:-8]
        assert seen["a"].unique().tolist() == values
        spread = interior.std(dim=(-2, -1)).max().item()
        assert spread == 0.0 if mode == "plus" else spread > 0.1  # plus: the prediction is constant inside


def test_attention_normalize_switch_gives_the_literal_binary_product() -> None:
    """``method.attention_normalize=false`` feeds ``proj`` the literal ``A v`` (integer sums of +-1 values)."""
    from bindense.models.spec import MethodSpec
    from bindense.models.vit import Attention

    torch.manual_seed(0)
    ours = Attention(MethodSpec.from_config({"layout": "bidense"}), dim=16, num_heads=2)
    literal = Attention(MethodSpec.from_config({"layout": "bidense", "attention_normalize": False}), 16, 2)
    literal.load_state_dict(ours.state_dict())
    assert ours.normalize and not literal.normalize
    seen, x = {}, torch.randn(2, 9, 16)
    for name, m in (("ours", ours), ("literal", literal)):
        m.proj.register_forward_pre_hook(lambda _m, args, name=name: seen.__setitem__(name, args[0].detach()))
        m(x)
    a, b = seen["ours"], seen["literal"]
    assert torch.equal(b, b.round()) and b.abs().max() > 1  # counts of +-1 over the selected keys
    assert a.abs().max() <= 1 + 1e-6
    # each head's row is the literal row divided by one count (its number of selected keys, >= 1)
    ratio = (b / a).reshape(2, 9, 2, 8)
    count = ratio[..., :1]
    torch.testing.assert_close(ratio, count.expand_as(ratio))
    assert torch.equal(count, count.round()) and count.min() >= 1
