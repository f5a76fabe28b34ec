"""The fused unit node (bindense.binary.fused): same values and gradients as the reference, less saved memory."""

from __future__ import annotations

import copy

import pytest
import torch
from binary_units import DAB_UNITS, perturbed, run_unit

from bindense.binary import BinaryConv2d
from bindense.binary.fused import BinaryConvFunction, ConvGeometry, pack_bits, unpack_bits
from bindense.binary.layers import configure_lean
from bindense.models.spec import MethodSpec

RTOL, ATOL = 1e-5, 1e-6


def _input(*shape: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * scale
    x.view(-1)[:4] = torch.tensor([-1.0, 0.0, 1.0, -0.0])
    return x


UNITS = {
    **DAB_UNITS,
    "sign_sign_bias": lambda: BinaryConv2d(6, 8, 3, padding=1, bias=True, activation="sign", weight="sign"),
}


def _is_fused(unit: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether the unit's op ran as one BinaryConvFunction node."""
    out = unit(x.clone().requires_grad_(True))
    node, seen = out.grad_fn, []
    while node is not None and len(seen) < 10:
        seen.append(type(node).__name__)
        node = node.next_functions[0][0] if node.next_functions else None
    return any("BinaryConvFunction" in n for n in seen)


@pytest.mark.parametrize("name", list(UNITS))
def test_fused_unit_equals_reference(name: str) -> None:
    """In float64, so that the comparison is about the formulas: in float32 the bias gradients of DAB are sums
    of 128 terms that cancel, and the reference's polynomial surrogate rounds differently from ``2 - 2|s|``."""
    unit = perturbed(UNITS[name]()).double()
    x = _input(2, 6, 8, 8).double()
    assert _is_fused(unit, x)
    (out_f, gx_f, gp_f), (out_r, gx_r, gp_r) = run_unit(unit, x), run_unit(unit, x, reference=True)
    torch.testing.assert_close(out_f, out_r, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(gx_f, gx_r, rtol=RTOL, atol=ATOL)
    assert gp_f.keys() == gp_r.keys()
    for key in gp_r:
        assert gp_r[key] is not None and gp_r[key].abs().sum() > 0, key
        torch.testing.assert_close(gp_f[key], gp_r[key], rtol=RTOL, atol=ATOL, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.parametrize("name", list(UNITS))
def test_fused_unit_bit_identical_to_unfused(name: str) -> None:
    """Fusion only changes what is saved: outputs and every gradient equal the unfused lean path bit for bit (the
    eager ops; the native kernels' statistics are compared with the formulas in tests/test_binary_kernels.py)."""
    unit = configure_lean(perturbed(UNITS[name]()), unit_kernels="eager")
    x = _input(2, 6, 8, 8, seed=1)
    unfused = configure_lean(copy.deepcopy(unit), fused=False)
    assert not _is_fused(unfused, x)
    (out_f, gx_f, gp_f), (out_u, gx_u, gp_u) = run_unit(unit, x), run_unit(unfused, x)
    assert torch.equal(out_f, out_u)
    assert torch.equal(gx_f, gx_u)
    for key in gp_u:
        assert torch.equal(gp_f[key], gp_u[key]), key


def _saved_bytes(unit: torch.nn.Module, x: torch.Tensor) -> int:
    params = {p.untyped_storage().data_ptr() for p in unit.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr != 0:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unit(x.clone().requires_grad_(True))
    return sum(seen.values())


def test_fused_saves_less() -> None:
    """DAB unit (no norm): the unfused path saves s, the binarized input, the binarized weight and its mask;
    the fused node saves s (4 B per input element) plus per-channel statistics only."""
    x = _input(2, 16, 12, 12)
    unit = BinaryConv2d(16, 32, 3, padding=1, norm=False, bypass="none")
    fused = _saved_bytes(unit, x)
    unfused = _saved_bytes(configure_lean(copy.deepcopy(unit), fused=False), x)
    n, w = x.numel(), unit.weight.numel()
    assert unfused >= 8 * n + 5 * w
    assert 4 * n <= fused <= 4 * n + 1024
    bnn = BinaryConv2d(16, 32, 3, padding=1, norm=False, bypass="none", activation="sign", weight="sign")
    assert _saved_bytes(bnn, x) <= n // 4 + 64  # signs and clip mask, 1 bit each


def test_bf16_saved_format() -> None:
    """The bf16 option: exact forward and weight gradient; the DAB gradients within bfloat16 rounding. It runs
    the eager ops (the native kernels keep x instead of s), so it is compared with the eager exact node."""
    unit = configure_lean(perturbed(BinaryConv2d(6, 10, 3, padding=1)), unit_kernels="eager")
    x = _input(2, 6, 8, 8, seed=2)
    lowp = configure_lean(copy.deepcopy(unit), saved_activation="bf16", unit_kernels="eager")
    (out_l, gx_l, gp_l), (out_e, gx_e, gp_e) = run_unit(lowp, x), run_unit(unit, x)
    assert torch.equal(out_l, out_e)
    assert torch.equal(gp_l["weight"], gp_e["weight"])
    torch.testing.assert_close(gx_l, gx_e, rtol=2e-2, atol=2e-2)
    assert not torch.equal(gx_l, gx_e)  # it is an approximation (which is why it is off by default)
    plain = _saved_bytes(BinaryConv2d(16, 32, 3, padding=1, norm=False, bypass="none"), _input(2, 16, 12, 12))
    small = _saved_bytes(
        configure_lean(BinaryConv2d(16, 32, 3, padding=1, norm=False, bypass="none"), saved_activation="bf16"),
        _input(2, 16, 12, 12),
    )
    assert small < 0.6 * plain


def test_configure_lean_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="saved_activation"):
        configure_lean(BinaryConv2d(4, 4, 1), saved_activation="fp8")


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 1001])
def test_pack_bits_round_trip(n: int) -> None:
    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8
    assert torch.equal(unpack_bits(packed, mask.shape).bool(), mask)


def test_negative_zero_rebuilt_as_plus() -> None:
    """-0.0 binarizes to +alpha in forward and is rebuilt as +alpha in backward (both saved formats)."""
    x = torch.tensor([-0.0, 0.0, -2.0, 0.5]).view(1, 1, 2, 2).requires_grad_(True)
    zeros = torch.zeros(1, 1, 1, 1)
    w = torch.ones(1, 1, 1, 1, requires_grad=True)
    geometry = ConvGeometry((1, 1), (0, 0), (1, 1), False, (0, 0), 1)
    for saved in ("exact", "bf16"):
        w.grad = None
        y = BinaryConvFunction.apply(x, w, None, zeros, zeros, zeros, "dab", "fp32", (), geometry, saved)
        assert y.flatten().tolist() == [1.0, 1.0, -1.0, 1.0]
        y.backward(torch.ones_like(y))
        assert w.grad.item() == 2.0  # sum of the rebuilt binarized input: +1 +1 -1 +1


@pytest.mark.parametrize("variant", ["dab_groups", "sign_zero"])
def test_units_the_node_does_not_implement_run_their_modules(variant: str) -> None:
    """Grouped DAB (method.dab_groups) and sign(0) = 0 (method.sign_zero) are not fused: same as the reference."""
    spec = MethodSpec.from_config({"dab_groups": 4} if variant == "dab_groups" else {"sign_zero": "zero"})
    unit = perturbed(spec.conv(10, 8, 3, padding=1))
    x = _input(2, 10, 9, 9)
    if variant == "sign_zero":  # exact zeros of the signed input and of the latent weight
        with torch.no_grad():
            unit.activation_binarizer.k.zero_()
            unit.activation_binarizer.b.zero_()
            unit.weight.view(-1)[:3] = 0.0
        x[:, :, :2] = 0.0
    assert not _is_fused(unit, x)
    out, gx, gp = run_unit(unit, x)
    ref_out, ref_gx, ref_gp = run_unit(unit, x, reference=True)
    torch.testing.assert_close(out, ref_out, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(gx, ref_gx, rtol=RTOL, atol=ATOL)
    for name in gp:
        torch.testing.assert_close(gp[name], ref_gp[name], rtol=RTOL, atol=ATOL)


def test_a_hooked_binarizer_runs_as_itself_while_training() -> None:
    """Forward hooks on a binarizer (diagnostics, activation entropy) fire with gradients on: no fused node."""
    unit = perturbed(BinaryConv2d(6, 8, 3, padding=1))
    x = _input(2, 6, 7, 7)
    assert _is_fused(unit, x)
    seen = []
    handle = unit.activation_binarizer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert not _is_fused(unit, x) and seen == [torch.Size([2, 6, 7, 7])]
    handle.remove()
    assert _is_fused(unit, x)
