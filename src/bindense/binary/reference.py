"""Naive reference binarizers: the formulas of docs/METHODS.md composed from elementary torch ops.

They keep the detach trick of the original implementations (``forward.detach() - surrogate.detach() +
surrogate``), so autograd materialises every intermediate (masks, polynomial pieces, clipped copies).
They are the oracle in the tests and the baseline of ``scripts/benchmark.py --compare-naive``; the lean
autograd Functions of ``quantizers.py`` must match them exactly in value and gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _hard_sign(x: Tensor) -> Tensor:
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def sign_clip_ste(x: Tensor) -> Tensor:
    clipped = torch.clamp(x, -1.0, 1.0)
    return _hard_sign(x).detach() - clipped.detach() + clipped


def approx_sign(x: Tensor) -> Tensor:
    """Bi-Real Net's piecewise polynomial F(x) with the sign forward."""
    mask1 = (x < -1).float()
    mask2 = (x < 0).float()
    mask3 = (x < 1).float()
    out1 = -1 * mask1 + (x * x + 2 * x) * (1 - mask1)
    out2 = out1 * mask2 + (-x * x + 2 * x) * (1 - mask2)
    out3 = out2 * mask3 + 1 * (1 - mask3)
    return _hard_sign(x).detach() - out3.detach() + out3


def tanh_sign(x: Tensor, beta: Tensor) -> Tensor:
    soft = torch.tanh(beta * x)
    return _hard_sign(x).detach() - soft.detach() + soft


def ede_sign(x: Tensor, k: float, t: float) -> Tensor:
    soft = k * torch.tanh(t * x)
    return _hard_sign(x).detach() - soft.detach() + soft


def scaled_sign_clip_ste(w: Tensor, dims: tuple[int, ...]) -> Tensor:
    scale = torch.mean(torch.abs(w), dim=dims, keepdim=True).detach()
    clipped = torch.clamp(w, -1.0, 1.0)
    binary = scale * _hard_sign(w)
    return binary.detach() - clipped.detach() + clipped


def dab(x: Tensor, a: Tensor, k: Tensor, b: Tensor, dims: tuple[int, ...]) -> Tensor:
    beta = k * torch.mean(x, dim=dims, keepdim=True).detach() + b
    s = x - beta
    alpha = torch.exp(a * (torch.mean(torch.abs(s), dim=dims, keepdim=True).detach() - 1))
    return alpha * approx_sign(s)
