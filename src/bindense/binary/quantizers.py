"""Sign quantizers with explicit surrogate gradients, as lean autograd Functions.

Every forward maps ``x >= 0`` to +1 and ``x < 0`` to -1 (never 0, unlike ``torch.sign``), and each backward
saves only what its surrogate needs (one tensor, or a boolean mask). ``bindense.binary.reference`` composes
the same formulas from elementary torch ops; it is the oracle of the tests and the "naive" side of
``scripts/benchmark.py --compare-naive``. ``use_reference(True)`` switches every binarizer to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

_REFERENCE = False


def reference_enabled() -> bool:
    """Whether binarizers currently route through the naive reference composition."""
    return _REFERENCE


@contextlib.contextmanager
def use_reference(enabled: bool = True) -> Iterator[None]:
    """Route every binarizer through ``bindense.binary.reference`` inside the block (benchmarks, tests)."""
    global _REFERENCE
    previous, _REFERENCE = _REFERENCE, enabled
    try:
        yield
    finally:
        _REFERENCE = previous


def binary_sign(x: Tensor) -> Tensor:
    """+1 where ``x >= 0``, -1 elsewhere, in ``x``'s dtype (zero maps to +1, like Larq's SteSign)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def approx_sign_grad(x: Tensor) -> Tensor:
    """Bi-Real ApproxSign derivative: ``2 - 2|x|`` for ``|x| < 1``, else 0."""
    return (2.0 - 2.0 * x.abs()).clamp_(min=0.0)


class SignClipSTE(torch.autograd.Function):
    """sign(x) forward; straight-through gradient clipped at |x| <= 1 (BNN, weight binarizers)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x.abs() <= 1)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (inside,) = ctx.saved_tensors
        return grad * inside


class ApproxSign(torch.autograd.Function):
    """sign(x) forward; ApproxSign (Bi-Real Net) backward ``2 - 2|x|`` on ``|x| < 1``."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * approx_sign_grad(x)


class TanhSign(torch.autograd.Function):
    """sign(x) forward; backward of ``tanh(beta * x)`` w.r.t. x and the learnable scalar beta (BiSR)."""

    @staticmethod
    def forward(ctx, x: Tensor, beta: Tensor) -> Tensor:
        ctx.save_for_backward(x, beta)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, beta = ctx.saved_tensors
        sech2 = 1.0 - torch.tanh(beta * x).square()
        grad_x = grad * beta * sech2
        grad_beta = (grad * x * sech2).sum().reshape(beta.shape)
        return grad_x, grad_beta


class EDESign(torch.autograd.Function):
    """sign(x) forward; Error Decay Estimator backward ``k * t * (1 - tanh(t x)^2)`` (IR-Net, AdaBin)."""

    @staticmethod
    def forward(ctx, x: Tensor, k: float, t: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.k, ctx.t = k, t
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return grad * (ctx.k * ctx.t) * (1.0 - torch.tanh(ctx.t * x).square()), None, None


class ScaledSignClipSTE(torch.autograd.Function):
    """``scale * sign(w)`` with a detached ``scale = mean|w|`` over ``dims``; STE clipped at |w| <= 1."""

    @staticmethod
    def forward(ctx, w: Tensor, dims: tuple[int, ...]) -> Tensor:
        ctx.save_for_backward(w.abs() <= 1)
        return w.abs().mean(dim=dims, keepdim=True) * binary_sign(w)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None


class DABFunction(torch.autograd.Function):
    """Distribution-adaptive binarizer (BiDense), fused: one saved activation-sized tensor.

    ``s = x - (k * mean(x) + b)``, ``alpha = exp(a * (mean|s| - 1))``, output ``alpha * sign(s)``; both means are
    over ``dims`` (the spatial/token axes) and detached. Gradients are the closed forms of PAPERS.md 1.1.
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, k: Tensor, b: Tensor, dims: tuple[int, ...]) -> Tensor:
        mean_x = x.mean(dim=dims, keepdim=True)
        s = x - (k * mean_x + b)
        mean_abs_s = s.abs().mean(dim=dims, keepdim=True)
        alpha = torch.exp(a * (mean_abs_s - 1.0))
        ctx.save_for_backward(s, a, mean_x, mean_abs_s, alpha)
        return alpha * binary_sign(s)

    @staticmethod
    def backward(ctx, grad: Tensor):
        s, a, mean_x, mean_abs_s, alpha = ctx.saved_tensors
        grad_s = grad * alpha * approx_sign_grad(s)
        reduce = [d for d in range(grad.dim()) if a.shape[d] == 1]
        grad_b = -grad_s.sum(dim=reduce, keepdim=True)
        grad_k = -(grad_s.sum(dim=_broadcast_dims(s, a), keepdim=True) * mean_x).sum(dim=0, keepdim=True)
        grad_a = (grad * binary_sign(s)).sum(dim=_broadcast_dims(s, a), keepdim=True)
        grad_a = (grad_a * alpha * (mean_abs_s - 1.0)).sum(dim=0, keepdim=True)
        return grad_s, grad_a, grad_k, grad_b, None


def _broadcast_dims(x: Tensor, param: Tensor) -> list[int]:
    """The non-batch axes along which a per-channel parameter is broadcast over ``x``."""
    return [d for d in range(1, x.dim()) if param.shape[d] == 1]
