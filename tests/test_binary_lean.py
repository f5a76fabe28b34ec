"""The lean autograd binarizers equal the naive reference compositions, in value and in every gradient."""

from __future__ import annotations

import copy

import pytest
import torch

from bindense.binary import (
    DAB,
    AdaBinActivation,
    AdaBinWeight,
    BinaryConv2d,
    BiSRActivation,
    BiViTSignWeight,
    CenteredScaledSignWeight,
    RSign,
    ScaledSignWeight,
    SignActivation,
    SignWeight,
    use_reference,
)
from bindense.binary import quantizers as q
from bindense.binary import reference as ref

RTOL, ATOL = 1e-5, 1e-6


# Forward tolerance: the reference's detach trick ``(Wb - clip(W)).detach() + clip(W)`` rounds, so its scaled
# weights can sit one ulp away from the exact ``mean|W| * sign(W)`` that the lean Functions return.
FWD_RTOL, FWD_ATOL = 2.5e-7, 0.0


def _input(*shape: int, seed: int = 0, scale: float = 1.5) -> torch.Tensor:
    """Random values spread over both sides of the +-1 clip points, plus the exact boundaries -1, 0, 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * scale
    flat = x.view(-1)
    flat[:3] = torch.tensor([-1.0, 0.0, 1.0])
    return x


def _grads(fn, inputs: list[torch.Tensor], seed: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    out.backward(g)
    return out.detach(), [leaf.grad for leaf in leaves]


def _assert_same(lean_fn, ref_fn, inputs: list[torch.Tensor]) -> None:
    out_l, grads_l = _grads(lean_fn, inputs)
    out_r, grads_r = _grads(ref_fn, inputs)
    torch.testing.assert_close(out_l, out_r, rtol=FWD_RTOL, atol=FWD_ATOL)
    for i, (gl, gr) in enumerate(zip(grads_l, grads_r)):
        assert gl is not None and gr is not None, f"missing gradient for input {i}"
        assert gr.abs().sum() > 0, f"reference gradient {i} is all zero: the test would prove nothing"
        torch.testing.assert_close(gl, gr, rtol=RTOL, atol=ATOL, msg=lambda m, i=i: f"grad {i}: {m}")


def test_sign_clip_ste() -> None:
    _assert_same(q.SignClipSTE.apply, ref.sign_clip_ste, [_input(4, 8, 5, 5)])


def test_approx_sign() -> None:
    _assert_same(q.ApproxSign.apply, ref.approx_sign, [_input(4, 8, 5, 5)])


def test_tanh_sign_x_and_beta() -> None:
    beta = torch.tensor([1.3])
    _assert_same(q.TanhSign.apply, ref.tanh_sign, [_input(4, 8, 5, 5), beta])


@pytest.mark.parametrize("t", [1e-3, 0.5, 10.0])
def test_ede_sign(t: float) -> None:
    k = max(1.0 / t, 1.0)
    _assert_same(lambda x: q.EDESign.apply(x, k, t), lambda x: ref.ede_sign(x, k, t), [_input(6, 3, 3, 3)])


def test_scaled_sign_clip_ste() -> None:
    dims = (1, 2, 3)
    _assert_same(
        lambda w: q.ScaledSignClipSTE.apply(w, dims),
        lambda w: ref.scaled_sign_clip_ste(w, dims),
        [_input(16, 8, 3, 3)],
    )


@pytest.mark.parametrize("channels_last", [False, True])
def test_dab_function_all_grads(channels_last: bool) -> None:
    if channels_last:
        x, shape, dims = _input(3, 20, 8, scale=2.0), (1, 1, 8), (1,)
    else:
        x, shape, dims = _input(3, 8, 6, 7, scale=2.0), (1, 8, 1, 1), (2, 3)
    g = torch.Generator().manual_seed(5)
    a = torch.randn(shape, generator=g) * 0.5
    k = torch.randn(shape, generator=g) * 0.5
    b = torch.randn(shape, generator=g) * 0.3
    _assert_same(
        lambda x, a, k, b: q.DABFunction.apply(x, a, k, b, dims),
        lambda x, a, k, b: ref.dab(x, a, k, b, dims),
        [x, a, k, b],
    )


def _module_case(
    module: torch.nn.Module, x: torch.Tensor, seed: int = 2, fwd_rtol: float = FWD_RTOL, fwd_atol: float = FWD_ATOL
) -> None:
    """Same module run lean and under ``use_reference()``: equal output, input grad and parameter grads."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move parameters off their init so every gradient term is non-trivial
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    results = []
    for reference in (False, True):
        m = copy.deepcopy(module)
        xi = x.detach().clone().requires_grad_(True)
        with use_reference(reference):
            out = m(xi)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)))
        results.append((out.detach(), xi.grad, {n: p.grad for n, p in m.named_parameters()}))
    (out_l, gx_l, gp_l), (out_r, gx_r, gp_r) = results
    torch.testing.assert_close(out_l, out_r, rtol=fwd_rtol, atol=fwd_atol)
    torch.testing.assert_close(gx_l, gx_r, rtol=RTOL, atol=ATOL)
    assert gx_r.abs().sum() > 0
    assert gp_l.keys() == gp_r.keys()
    for name in gp_r:
        assert gp_r[name] is not None and gp_r[name].abs().sum() > 0, name
        torch.testing.assert_close(gp_l[name], gp_r[name], rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize(
    "factory",
    [SignActivation, lambda: RSign(6), AdaBinActivation, lambda: BiSRActivation(6), lambda: DAB(6)],
    ids=["sign", "rsign", "adabin", "bisr", "dab"],
)
def test_activation_modules(factory) -> None:
    _module_case(factory(), _input(3, 6, 7, 5, scale=2.0))


@pytest.mark.parametrize("factory", [lambda: RSign(6, True), lambda: BiSRActivation(6, True), lambda: DAB(6, True)])
def test_activation_modules_channels_last(factory) -> None:
    _module_case(factory(), _input(2, 11, 6, scale=2.0))


@pytest.mark.parametrize(
    "factory",
    [
        SignWeight,
        ScaledSignWeight,
        CenteredScaledSignWeight,
        BiViTSignWeight,
        AdaBinWeight,
        lambda: ScaledSignWeight(channel_dim=1),
    ],
    ids=["sign", "scaled_sign", "centered_sign", "bivit_sign", "adabin", "scaled_sign_dim1"],
)
def test_weight_binarizers(factory) -> None:
    _module_case(factory(), _input(8, 6, 3, 3, scale=0.8))


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_adabin_weight_schedule(progress: float) -> None:
    m = AdaBinWeight()
    m.set_progress(progress)
    _module_case(m, _input(8, 6, 3, 3, scale=0.8))


@pytest.mark.parametrize("activation,weight", [("dab", "scaled_sign"), ("adabin", "adabin"), ("bisr", "sign")])
def test_binary_conv_unit(activation: str, weight: str) -> None:
    conv = BinaryConv2d(6, 10, 3, padding=1, activation=activation, weight=weight, bypass="cfb")
    with torch.no_grad():
        conv.weight.normal_(0, 0.7)  # latent weights on both sides of the clip at |W| = 1
    # one-ulp weight differences (see FWD_RTOL) are summed by the convolution: compare at float tolerance
    _module_case(conv, _input(2, 6, 8, 8, scale=2.0), fwd_rtol=RTOL, fwd_atol=ATOL)


def test_activation_binarizers_forward_bit_identical() -> None:
    """Sign-valued forwards have no rounding in either path: lean and reference agree bit for bit."""
    x = _input(3, 6, 7, 5, scale=2.0)
    assert torch.equal(q.SignClipSTE.apply(x), ref.sign_clip_ste(x))
    assert torch.equal(q.ApproxSign.apply(x), ref.approx_sign(x))
    a, k, b = (torch.randn(1, 6, 1, 1) * 0.3 for _ in range(3))
    assert torch.equal(q.DABFunction.apply(x, a, k, b, (2, 3)), ref.dab(x, a, k, b, (2, 3)))


def test_scaled_sign_forward_is_exact() -> None:
    """The lean weight is exactly ``mean|W| * sign(W)`` (what export packs), sign(0) = +1."""
    w = _input(8, 6, 3, 3, scale=0.8)
    expected = w.abs().mean(dim=(1, 2, 3), keepdim=True) * torch.where(w >= 0, 1.0, -1.0)
    assert torch.equal(q.ScaledSignClipSTE.apply(w, (1, 2, 3)), expected)
    assert q.ScaledSignClipSTE.apply(torch.zeros(2, 3), (1,)).eq(0).all()  # zero scale, +1 sign
    assert torch.equal(q.SignClipSTE.apply(torch.zeros(4)), torch.ones(4))


def test_negative_zero_maps_to_plus_one() -> None:
    """-0.0 (e.g. from -0.0 - 0.0 in DAB's shift) binarizes to +1 in both paths, like +0.0."""
    x = torch.tensor([[-0.0, 0.0, -2.0, 0.5]]).view(1, 1, 2, 2)
    assert q.binary_sign(x).flatten().tolist() == [1.0, 1.0, -1.0, 1.0]
    assert torch.equal(q.SignClipSTE.apply(x), ref.sign_clip_ste(x))
    zeros = torch.zeros(1, 1, 1, 1)
    lean = q.DABFunction.apply(x, zeros, zeros, zeros, (2, 3))
    assert torch.equal(lean, ref.dab(x, zeros, zeros, zeros, (2, 3)))
    assert lean.flatten().tolist() == [1.0, 1.0, -1.0, 1.0]
