"""Binarizers and binary units against the closed forms of docs/METHODS.md#1-units, on random inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bindense.binary import (
    DAB,
    AdaBinActivation,
    AdaBinWeight,
    BinaryConv2d,
    BinaryConvTranspose2d,
    BinaryLinear,
    BiSRActivation,
    CenteredScaledSignWeight,
    Maxout,
    RSign,
    ScaledSignWeight,
    SignActivation,
    SignWeight,
    binary_sign,
    cfb,
    make_activation,
    make_weight,
)

torch.manual_seed(0)


def approx_sign_grad(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 1, 2 - 2 * x.abs(), torch.zeros_like(x))


def test_sign_maps_zero_to_plus_one():
    x = torch.tensor([-2.0, -1e-8, 0.0, 1e-8, 3.0])
    assert binary_sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    assert SignActivation()(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]


def test_sign_activation_clipped_ste():
    x = (torch.randn(4, 3, 5, 5) * 2).requires_grad_()
    g = torch.randn_like(x)
    SignActivation()(x).backward(g)
    assert torch.equal(x.grad, g * (x.detach().abs() <= 1))


def test_rsign_shift_and_approxsign_gradient():
    m = RSign(3)
    with torch.no_grad():
        m.bias.copy_(torch.randn(1, 3, 1, 1))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    g = torch.randn(2, 3, 6, 6)
    y = m(x)
    s = (x + m.bias).detach()
    assert torch.equal(y, torch.where(s >= 0, 1.0, -1.0))
    y.backward(g)
    torch.testing.assert_close(x.grad, g * approx_sign_grad(s))
    torch.testing.assert_close(m.bias.grad, (g * approx_sign_grad(s)).sum((0, 2, 3), keepdim=True))


def _random_dab(channels: int) -> DAB:
    m = DAB(channels)
    with torch.no_grad():  # away from the near-zero init so every term matters
        m.a.copy_(torch.randn_like(m.a) * 0.5)
        m.k.copy_(torch.randn_like(m.k) * 0.5)
        m.b.copy_(torch.randn_like(m.b) * 0.3)
    return m


def test_dab_init_matches_paper():
    m = DAB(64)
    assert m.a.shape == m.k.shape == m.b.shape == (1, 64, 1, 1)
    assert torch.all(m.b == 0)
    assert 0 < m.a.std() < 3e-3 and 0 < m.k.std() < 3e-3


def test_dab_forward_is_plus_minus_alpha_per_channel():
    m = _random_dab(5)
    x = torch.randn(3, 5, 7, 9) * 1.5 + 0.4
    y = m(x)
    mean_x = x.mean((2, 3), keepdim=True)
    s = x - (m.k * mean_x + m.b)
    alpha = torch.exp(m.a * (s.abs().mean((2, 3), keepdim=True) - 1))
    torch.testing.assert_close(y, alpha * torch.where(s >= 0, 1.0, -1.0))
    # each (sample, channel) takes exactly the two values +-alpha
    for n in range(3):
        for c in range(5):
            values = y[n, c].unique()
            assert len(values) <= 2
            torch.testing.assert_close(values.abs(), alpha[n, c, 0, 0].expand_as(values).detach())


def test_dab_gradients_match_closed_forms():
    m = _random_dab(4)
    x = (torch.randn(2, 4, 6, 5) * 0.8 + 0.2).requires_grad_()
    g = torch.randn(2, 4, 6, 5)
    m(x).backward(g)
    with torch.no_grad():
        mean_x = x.mean((2, 3), keepdim=True)
        s = x - (m.k * mean_x + m.b)
        mean_abs = s.abs().mean((2, 3), keepdim=True)
        alpha = torch.exp(m.a * (mean_abs - 1))
        fprime = approx_sign_grad(s)
        dx = alpha * fprime * g
        db = (-alpha * fprime * g).sum((0, 2, 3), keepdim=True)
        dk = (-alpha * fprime * mean_x * g).sum((0, 2, 3), keepdim=True)
        da = (torch.where(s >= 0, 1.0, -1.0) * alpha * (mean_abs - 1) * g).sum((0, 2, 3), keepdim=True)
    torch.testing.assert_close(x.grad, dx)
    torch.testing.assert_close(m.b.grad, db)
    torch.testing.assert_close(m.k.grad, dk)
    torch.testing.assert_close(m.a.grad, da)


def test_dab_statistics_recomputed_at_inference():
    m = _random_dab(3).eval()
    x = torch.randn(1, 3, 4, 4)
    y1, y2 = m(x), m(x * 3 + 1)
    alpha1 = y1.abs().amax((2, 3))
    alpha2 = y2.abs().amax((2, 3))
    assert not torch.allclose(alpha1, alpha2)


def test_dab_on_tokens_uses_token_statistics():
    m = DAB(6, channels_last=True)
    with torch.no_grad():
        m.a.fill_(0.7)
    x = torch.randn(2, 10, 6)
    s = x - (m.k * x.mean(1, keepdim=True) + m.b)
    alpha = torch.exp(m.a * (s.abs().mean(1, keepdim=True) - 1))
    torch.testing.assert_close(m(x), alpha * torch.where(s >= 0, 1.0, -1.0))


def test_adabin_activation_forward_and_gradients():
    m = AdaBinActivation()
    with torch.no_grad():
        m.alpha.fill_(1.7)
        m.beta.fill_(0.3)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    g = torch.randn(2, 3, 4, 4)
    y = m(x)
    u = ((x - m.beta) / m.alpha).detach()
    sgn = torch.where(u >= 0, 1.0, -1.0)
    torch.testing.assert_close(y, 1.7 * (sgn + 0.3))
    y.backward(g)
    fprime = approx_sign_grad(u)
    torch.testing.assert_close(x.grad, g * fprime)  # alpha * F'(u) / alpha
    d_alpha = (g * ((sgn + 0.3) - fprime * u)).sum()
    d_beta = (g * (-fprime + 1.7)).sum()
    torch.testing.assert_close(m.alpha.grad, d_alpha)
    torch.testing.assert_close(m.beta.grad, d_beta)


def test_bisr_redistribution_and_tanh_backward():
    m = BiSRActivation(3)
    with torch.no_grad():
        m.k.copy_(torch.rand(1, 3, 1, 1) + 0.5)
        m.b.copy_(torch.randn(1, 3, 1, 1) * 0.2)
        m.beta.fill_(1.6)
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    g = torch.randn(2, 3, 5, 5)
    y = m(x)
    xr = (m.k * x + m.b).detach()
    assert torch.equal(y, torch.where(xr >= 0, 1.0, -1.0))
    y.backward(g)
    sech2 = 1 - torch.tanh(1.6 * xr) ** 2
    torch.testing.assert_close(x.grad, g * 1.6 * sech2 * m.k.detach())
    torch.testing.assert_close(m.b.grad, (g * 1.6 * sech2).sum((0, 2, 3), keepdim=True))
    torch.testing.assert_close(m.beta.grad, (g * xr * sech2).sum().reshape(1))


def test_sign_weight_and_scaled_sign_weight():
    w = (torch.randn(6, 4, 3, 3) * 0.8).requires_grad_()
    g = torch.randn_like(w)
    SignWeight()(w).backward(g)
    torch.testing.assert_close(w.grad, g * (w.detach().abs() <= 1))
    w.grad = None
    wb = ScaledSignWeight()(w)
    scale = w.detach().abs().mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(wb, scale * torch.where(w >= 0, 1.0, -1.0))
    for o in range(6):  # +-mean|W_o| per output channel
        torch.testing.assert_close(wb[o].abs(), scale[o].expand(4, 3, 3))
    wb.backward(g)
    torch.testing.assert_close(w.grad, g * (w.detach().abs() <= 1))  # no scale in the STE


def test_scaled_sign_on_transposed_weight_uses_output_axis():
    w = torch.randn(4, 6, 2, 2)  # ConvTranspose2d: (C_in, C_out, kh, kw)
    wb = ScaledSignWeight(channel_dim=1)(w)
    torch.testing.assert_close(wb.abs(), w.abs().mean((0, 2, 3), keepdim=True).expand_as(w))


def test_centered_sign_for_linears():
    w = torch.randn(5, 8) + 0.7
    wb = CenteredScaledSignWeight()(w)
    c = w - w.mean(1, keepdim=True)  # sign of the centred row, scale mean|W| of the raw row (authors' code)
    torch.testing.assert_close(wb, w.abs().mean(1, keepdim=True) * torch.where(c >= 0, 1.0, -1.0))


def test_adabin_weight_formula_and_ede_schedule():
    m = AdaBinWeight()
    w = torch.randn(6, 2, 3, 3, requires_grad=True)
    wb = m(w)
    beta = w.mean((1, 2, 3), keepdim=True)
    alpha = ((w - beta) ** 2).sum((1, 2, 3), keepdim=True).div(2 * 3 * 3).sqrt()
    torch.testing.assert_close(wb, alpha * torch.where(w - beta >= 0, 1.0, -1.0) + beta)
    assert m.t == pytest.approx(1e-3) and m.k == pytest.approx(1e3)
    m.set_progress(0.5)
    assert m.t == pytest.approx(0.1) and m.k == pytest.approx(10.0)
    m.set_progress(1.0)
    assert m.t == pytest.approx(10.0) and m.k == pytest.approx(1.0)
    # EDE backward of the sign: k t (1 - tanh^2(t u)); the only gradient path through u
    u = ((w - beta) / alpha).detach().requires_grad_()
    from bindense.binary.quantizers import EDESign

    g = torch.randn_like(u)
    EDESign.apply(u, m.k, m.t).backward(g)
    torch.testing.assert_close(u.grad, g * m.k * m.t * (1 - torch.tanh(m.t * u.detach()) ** 2))


def test_maxout():
    m = Maxout(3)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(m(x), F.relu(x) - 0.25 * F.relu(-x))


@pytest.mark.parametrize(
    ("cin", "cout", "groups"),
    [(8, 4, [[0, 3], [1, 4], [2, 5], [6, 7]]), (8, 3, [[0, 2], [1, 3], [4, 5, 6, 7]])],
)
def test_cfb_worked_reductions(cin, cout, groups):
    x = torch.randn(2, cin, 3, 3)
    expected = torch.stack([x[:, g].mean(1) for g in groups], 1)
    torch.testing.assert_close(cfb(x, cout), expected)


def test_cfb_worked_expansion_and_identity():
    x = torch.randn(2, 6, 3, 3)
    y = cfb(x, 16)
    expected = torch.cat([x, x, x[:, 0:1], x[:, 1:2], x[:, 2:3], x[:, 3:6].mean(1, keepdim=True)], 1)
    torch.testing.assert_close(y, expected)
    assert cfb(x, 6) is x


def test_cfb_m_equals_one_is_mean_of_all_channels():
    x = torch.randn(2, 5, 3, 3)
    y = cfb(x, 11)  # 2 * 5 + 1
    torch.testing.assert_close(y[:, :10], torch.cat([x, x], 1))
    torch.testing.assert_close(y[:, 10], x.mean(1))
    torch.testing.assert_close(cfb(x, 1)[:, 0], x.mean(1))


def test_binary_conv2d_matches_formula():
    unit = BinaryConv2d(6, 10, 3, padding=1)
    unit.train()
    x = torch.randn(2, 6, 8, 8)
    xb = unit.activation_binarizer(x)
    wb = unit.weight_binarizer(unit.weight)
    expected = unit.norm(F.conv2d(xb, wb, padding=1)) + cfb(x, 10)
    unit.norm.reset_running_stats()
    torch.testing.assert_close(unit(x), expected)


def test_binary_conv2d_options():
    x = torch.randn(2, 4, 6, 6)
    plain = BinaryConv2d(4, 4, 3, padding=1, activation="fp32", weight="fp32", bypass="none", norm=False)
    assert plain.norm is None and plain.input_bits == 32 and plain.weight_bits == 32
    torch.testing.assert_close(plain(x), F.conv2d(x, plain.weight, padding=1))
    unit = BinaryConv2d(4, 8, 2, stride=2, bypass="cfb", norm=False)
    assert unit.is_binary
    expected = F.conv2d(unit.activation_binarizer(x), unit.binary_weight(), stride=2)
    torch.testing.assert_close(unit(x), expected + cfb(F.avg_pool2d(x, 2, 2), 8))
    with pytest.raises(ValueError, match="bypass"):
        BinaryConv2d(4, 4, 3, bypass="skip")
    with pytest.raises(ValueError, match="activation"):
        make_activation("ternary", 4)
    with pytest.raises(ValueError, match="weight"):
        make_weight("ternary")


def test_binary_latent_weights_init_small():
    assert BinaryConv2d(64, 64, 3).weight.std() < 2e-3
    assert BinaryConv2d(64, 64, 3, weight="fp32").weight.std() > 1e-2


def test_binary_conv_transpose_bypass_upsamples():
    unit = BinaryConvTranspose2d(6, 3, 2, stride=2, norm=False)
    x = torch.randn(1, 6, 4, 4)
    y = unit(x)
    core = F.conv_transpose2d(unit.activation_binarizer(x), unit.binary_weight(), stride=2)
    torch.testing.assert_close(y, core + cfb(F.interpolate(x, scale_factor=2, mode="nearest"), 3))


def test_binary_linear_tokens():
    lin = BinaryLinear(8, 12, bypass="cfb")
    x = torch.randn(2, 5, 8, requires_grad=True)
    y = lin(x)
    xb = torch.where(x + lin.activation_binarizer.bias >= 0, 1.0, -1.0)
    expected = F.linear(xb, lin.binary_weight(), lin.bias) + cfb(x.movedim(-1, 1), 12).movedim(1, -1)
    torch.testing.assert_close(y, expected)
    y.sum().backward()
    assert lin.weight.grad is not None and x.grad is not None


@pytest.mark.parametrize("activation", ["fp32", "sign", "rsign", "adabin", "bisr", "dab"])
@pytest.mark.parametrize("weight", ["fp32", "sign", "scaled_sign", "adabin"])
def test_every_combination_trains(activation, weight):
    unit = BinaryConv2d(4, 6, 3, padding=1, activation=activation, weight=weight)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    unit(x).square().mean().backward()
    assert unit.weight.grad is not None and torch.isfinite(unit.weight.grad).all()
    assert unit.weight.grad.abs().sum() > 0
    for p in unit.activation_binarizer.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert unit.input_bits == (32 if activation == "fp32" else 1)
    assert unit.weight_bits == (32 if weight == "fp32" else 1)
