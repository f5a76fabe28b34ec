"""Sign quantizers with explicit surrogate gradients, as lean autograd Functions.

Every forward maps ``x >= 0`` (-0.0 included) to +1 and ``x < 0`` to -1 (never 0, unlike ``torch.sign``), and
each backward saves only what its surrogate needs (one tensor or a boolean mask; DAB: ``s`` and its output, which
the next conv saves anyway). Forwards use ``copysign`` rather than ``torch.where`` (slow on CPU) and backwards
work in place in one buffer; docs/DEPLOY.md has the measurements. ``bindense.binary.reference`` composes
the same formulas from elementary torch ops; it is the oracle of the tests and the "naive" side of
``scripts/benchmark.py --compare-naive``. ``use_reference(True)`` switches every binarizer to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from bindense.binary import reference as ref

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


@dataclass(frozen=True)
class Surrogate:
    """A sign with a surrogate gradient in its two implementations: the lean autograd Function and the reference.

    Calling it runs one or the other per :func:`use_reference`; this is the only place binarizers read the switch.
    """

    lean: Callable[..., Tensor]
    reference: Callable[..., Tensor]

    def __call__(self, *args) -> Tensor:
        return (self.reference if _REFERENCE else self.lean)(*args)


def binary_sign(x: Tensor) -> Tensor:
    """+1 where ``x >= 0``, -1 elsewhere, in ``x``'s dtype (zero maps to +1, like Larq's SteSign); no gradient."""
    with torch.no_grad():
        return _signed(torch.ones((), dtype=x.dtype, device=x.device), x)


def _signed(magnitude: Tensor, x: Tensor) -> Tensor:
    """``magnitude`` (>= 0, broadcastable to ``x``) with the sign of ``x``, +0 and -0 both positive (no autograd).

    ``copysign`` is one vectorised pass (``torch.where`` on a boolean mask is several times slower on CPU); adding
    +0.0 first turns -0.0 into +0.0, so that every zero maps to +magnitude. Values are exactly +-magnitude.
    """
    out = x + 0.0
    return torch.copysign(magnitude, out, out=out)


def approx_sign_grad(x: Tensor) -> Tensor:
    """Bi-Real ApproxSign derivative: ``2 - 2|x|`` for ``|x| < 1``, else 0 (one buffer, in-place passes)."""
    return x.abs().mul_(-2.0).add_(2.0).clamp_(min=0.0)


def _sum_to(t: Tensor, like: Tensor) -> Tensor:
    """Sum ``t`` over the axes along which ``like`` (a parameter) was broadcast; returns ``like``'s shape."""
    if like.dim() != t.dim():
        return t.sum().reshape(like.shape)
    dims = [d for d in range(t.dim()) if like.shape[d] == 1 and t.shape[d] != 1]
    return t.sum(dim=dims, keepdim=True) if dims else t


class SignClipSTE(torch.autograd.Function):
    """sign(x) forward; straight-through gradient clipped at |x| <= 1 (BNN, weight binarizers).

    Saves a boolean mask (1 byte per element) instead of the input.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x.abs() <= 1)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (inside,) = ctx.saved_tensors
        return grad * inside


class ApproxSign(torch.autograd.Function):
    """sign(x) forward; ApproxSign (Bi-Real Net) backward ``2 - 2|x|`` on ``|x| < 1``. Saves the input only."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return approx_sign_grad(x).mul_(grad)


def _sech2(z: Tensor) -> Tensor:
    """``1 - tanh(z)^2`` computed in ``tanh(z)``'s buffer."""
    return torch.tanh(z).square_().neg_().add_(1.0)


class TanhSign(torch.autograd.Function):
    """sign(x) forward; backward of ``tanh(beta * x)`` w.r.t. x and the learnable scalar beta (BiSR)."""

    @staticmethod
    def forward(ctx, x: Tensor, beta: Tensor) -> Tensor:
        ctx.save_for_backward(x, beta)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, beta = ctx.saved_tensors
        grad_z = _sech2(beta * x).mul_(grad)  # d/dz tanh(z) * grad, z = beta * x
        grad_beta = _sum_to(grad_z * x, beta)
        return grad_z.mul_(beta), grad_beta


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
        return _sech2(x * ctx.t).mul_(grad).mul_(ctx.k * ctx.t), None, None


class ScaledSignClipSTE(torch.autograd.Function):
    """``scale * sign(w)`` with a detached ``scale = mean|w|`` over ``dims``; STE clipped at |w| <= 1.

    The output is exactly ``+-scale`` (``copysign``); backward saves a boolean mask.
    """

    @staticmethod
    def forward(ctx, w: Tensor, dims: tuple[int, ...]) -> Tensor:
        magnitude = w.abs()
        ctx.save_for_backward(magnitude <= 1)
        return _signed(magnitude.mean(dim=dims, keepdim=True), w)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None


def dab_statistics(
    x: Tensor, a: Tensor, k: Tensor, b: Tensor, dims: tuple[int, ...]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """DAB's shifted input and detached statistics: ``s``, ``mean(x)``, ``mean|s|``, ``alpha`` (no autograd)."""
    mean_x = x.mean(dim=dims, keepdim=True)
    s = x - (k * mean_x + b)
    mean_abs_s = s.abs().mean(dim=dims, keepdim=True)
    alpha = torch.exp(a * (mean_abs_s - 1.0))
    return s, mean_x, mean_abs_s, alpha


def dab_parameter_grads(
    sum_g_xb: Tensor, per_sample: Tensor, a: Tensor, mean_x: Tensor, mean_abs_s: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """DAB's ``(grad_a, grad_k, grad_b)`` from two per-(sample, channel) sums, ``sum(g * alpha sign(s))`` (``g``:
    the output's gradient) and ``per_sample = sum(dL/ds)``: the closed forms of
    docs/METHODS.md#11-activation-binarizers."""
    grad_a = _sum_to(sum_g_xb * (mean_abs_s - 1.0), a)
    return grad_a, _sum_to(-(per_sample * mean_x), a), _sum_to(-per_sample, a)


class DABFunction(torch.autograd.Function):
    """Distribution-adaptive binarizer (BiDense), fused.

    ``s = x - (k * mean(x) + b)``, ``alpha = exp(a * (mean|s| - 1))``, output ``alpha * sign(s)``; both means are
    over ``dims`` (the spatial/token axes) and detached. Gradients are the closed forms of
    docs/METHODS.md#11-activation-binarizers.
    Saved for backward: ``s`` and the output (which the following conv/linear saves anyway, so it shares that
    storage) plus per-(sample, channel) statistics; no masks, and no ``torch.where`` (slow on CPU).
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, k: Tensor, b: Tensor, dims: tuple[int, ...]) -> Tensor:
        s, mean_x, mean_abs_s, alpha = dab_statistics(x, a, k, b, dims)
        out = _signed(alpha, s)
        ctx.dims = dims
        ctx.save_for_backward(s, out, a, mean_x, mean_abs_s, alpha)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        s, out, a, mean_x, mean_abs_s, alpha = ctx.saved_tensors
        dims = ctx.dims
        # dL/ds = alpha * F'(s) * g with F'(s) = 2 * max(1 - |s|, 0): min(|s| - 1, 0) * g * (-2 alpha), in place
        grad_s = s.abs().sub_(1.0).clamp_(max=0.0).mul_(grad).mul_(-2.0 * alpha)
        per_sample = grad_s.sum(dim=dims, keepdim=True)
        # dL/da = sum(g * sign(s)) * alpha * (mean|s| - 1) = sum(g * out) * (mean|s| - 1)
        sum_g_xb = (grad * out).sum(dim=dims, keepdim=True)
        return grad_s, *dab_parameter_grads(sum_g_xb, per_sample, a, mean_x, mean_abs_s), None


#: the surrogates of the binarizers, each lean beside its reference composition
SIGN_CLIP = Surrogate(SignClipSTE.apply, ref.sign_clip_ste)
APPROX_SIGN = Surrogate(ApproxSign.apply, ref.approx_sign)
TANH_SIGN = Surrogate(TanhSign.apply, ref.tanh_sign)
EDE_SIGN = Surrogate(EDESign.apply, ref.ede_sign)
SCALED_SIGN_CLIP = Surrogate(ScaledSignClipSTE.apply, ref.scaled_sign_clip_ste)
DAB_SIGN = Surrogate(DABFunction.apply, ref.dab)
