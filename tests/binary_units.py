"""Binary units and helpers shared by the fused-node tests (test_binary_fused.py) and the native-kernel tests
(test_binary_kernels.py)."""

from __future__ import annotations

import copy

import torch

from bindense.binary import BinaryConv2d, BinaryConvTranspose2d, use_reference
from bindense.models.spec import MethodSpec

#: DAB units of every geometry the fused node covers: conv, depthwise, downsampling, bias with fp32 weights,
#: transposed (weight scale per output or per input channel)
DAB_UNITS = {
    "dab_scaled_3x3": lambda: BinaryConv2d(6, 10, 3, padding=1),
    "dab_scaled_dw7": lambda: BinaryConv2d(6, 6, 7, padding=3, groups=6),
    "dab_scaled_down": lambda: BinaryConv2d(6, 12, 2, stride=2),
    "dab_fp32w_bias": lambda: BinaryConv2d(6, 8, 1, bias=True, weight="fp32"),
    "dab_transposed": lambda: BinaryConvTranspose2d(6, 4, 2, stride=2),
    "dab_transposed_input_scale": lambda: MethodSpec.from_config({"transpose_scale": "input"}).conv_transpose(
        6, 4, 2, stride=2
    ),
}


def perturbed(unit: torch.nn.Module, seed: int = 7) -> torch.nn.Module:
    """``unit`` with latent weights on both sides of the clip at |W| = 1 and its other parameters moved off their
    initial values (in place; returned)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        unit.weight.normal_(0, 0.7, generator=g)
        for name, p in unit.named_parameters():
            if name != "weight":
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return unit


def run_unit(
    unit: torch.nn.Module, x: torch.Tensor, reference: bool = False, seed: int = 3
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Forward and backward of a copy of ``unit`` (the reference composition with ``reference``) under a seeded
    random output gradient: ``(output, input gradient, {parameter name: gradient})``."""
    m = copy.deepcopy(unit)
    xi = x.detach().clone().requires_grad_(True)
    with use_reference(reference):
        out = m(xi)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype))
    return out.detach(), xi.grad, {n: p.grad for n, p in m.named_parameters()}
