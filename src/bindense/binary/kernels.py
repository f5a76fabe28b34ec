"""Native CPU kernels of the fused training unit (``model.unit_kernels=native``, docs/TRAINING.md).

The eager ops of :mod:`bindense.binary.fused` run DAB's forward and backward as chains of 6 to 10 single-op passes
over the activation and the weight binarization as 4 to 5 passes over the weight. The C++ kernels of the
``bindense.native`` extension (``csrc/train_ops.cpp``) do each in one to three passes per (sample, channel) plane
or output channel (the plane in cache between them), on the ISA path of :func:`bindense.native.isa`
(``BINDENSE_ISA`` forces one). DAB's shifted input ``s`` is never stored: the node keeps the unit's input ``x``
(often alive anyway) and the per-plane threshold, and recomputes ``s`` where it is read.

Values: the per-plane and per-row sums (``mean(x)``, ``mean|s|``, ``mean|W|``, the gradient sums) run in double
lanes in a fixed order, so they are not torch's float32 sums bit for bit (they are closer to the exact ones), and
are the same on every ISA path; every elementwise value (``s``, the binarized input and weight, the gradient of
``x``) is the eager node's float32 expression given those statistics, bit for bit (tests/test_binary_kernels.py).

Where the kernels do not apply (no native build, ``BINDENSE_ISA=torch``, CUDA, float64, non-contiguous tensors,
or under ``torch.compile``, which cannot trace an extension's functions and fuses the eager ops itself),
:func:`native_isa` returns ``None`` and the fused node runs its eager ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: ``model.unit_kernels`` choices: the C++ kernels where they apply, or torch's eager ops everywhere.
UNIT_KERNELS = ("native", "eager")


_EXTENSION: list = []  # the loaded extension module, once found (the kernels are called a few hundred times a step)


def _extension():
    if not _EXTENSION:
        from bindense.native import build  # noqa: PLC0415 - the extension is compiled on first use

        module = build.extension()
        if module is None:
            return None
        _EXTENSION.append(module)
    return _EXTENSION[0]


def native_isa(*tensors: Tensor | None) -> str | None:
    """The ISA path the kernels run for these tensors (``None`` entries skipped), or ``None`` where the eager ops
    must run instead. The kernels read the per-channel and per-plane tensors as flat buffers: contiguous, any
    shape with the expected number of elements."""
    if torch.compiler.is_compiling():
        return None
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
            return None
    if _extension() is None:
        return None
    from bindense import native  # noqa: PLC0415

    name = native.isa()
    return None if name == "torch" else name


def dab_forward(
    x: Tensor, a: Tensor, k: Tensor, b: Tensor, isa: str, out: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """DAB over ``x`` [N, C, H, W] with per-channel ``a``, ``k``, ``b``: ``(xb, mean_x, mean_abs_s, alpha, thr)``.

    ``thr = k mean(x) + b``, ``s = (x - thr) + 0`` (-0.0 turned into +0.0; not returned: :func:`dab_rebuild` and
    :func:`dab_backward` recompute it from ``x`` and ``thr``, bit for bit), ``xb = copysign(alpha, s)``; the
    statistics shaped ``(N, C, 1, 1)`` like :func:`bindense.binary.quantizers.dab_statistics`'. ``xb`` is written
    into ``out`` where given (a scratch buffer of ``x``'s shape; so are the other kernels' full-size outputs).
    """
    n, c = x.shape[:2]
    xb, stats = _extension().dab_forward(x, a, k, b, isa, out)
    mean_x, mean_abs_s, alpha, thr = stats.view(4, n, c, 1, 1).unbind(0)
    return xb, mean_x, mean_abs_s, alpha, thr


def dab_rebuild(x: Tensor, thr: Tensor, alpha: Tensor, isa: str) -> Tensor:
    """``copysign(alpha, (x - thr) + 0)``, the binarized input rebuilt from the unit's input."""
    return _extension().dab_rebuild(x, thr, alpha, isa)


def dab_backward(
    x: Tensor, thr: Tensor, grad_xb: Tensor, alpha: Tensor, isa: str, rebuild: bool = False, out: Tensor | None = None
) -> tuple[Tensor, ...]:
    """``(grad_s, sum(grad_xb * xb), sum(grad_s))``, the sums per plane shaped ``(N, C, 1, 1)``; ``grad_s`` is
    ``min(|s| - 1, 0) * grad_xb * (-2 alpha)`` (the ApproxSign surrogate, ``s = (x - thr) + 0``), written into
    ``grad_xb``'s buffer. With ``rebuild``, a fourth value: ``xb``, :func:`dab_rebuild`'s, from the same pass over
    ``x`` (the weight gradient's input, when the input gradient is computed first)."""
    n, c = x.shape[:2]
    grad, sums, *xb = _extension().dab_backward(x, thr, grad_xb.contiguous(), alpha, isa, rebuild, out)
    sum_gxb, sum_grad = sums.view(2, n, c, 1, 1).unbind(0)
    return (grad, sum_gxb, sum_grad, *xb)


def weight_forward(w: Tensor, scaled: bool, isa: str, out: Tensor | None = None) -> tuple[Tensor, Tensor, bool]:
    """``(wb, scale, all_inside)`` for a weight whose output channels are its rows (dim 0): ``scale = mean|W|``
    per row (``scaled``; else ones), ``wb = copysign(scale, W)`` with sign(0) = +1, and whether every
    ``|W| <= 1`` (the clipped STE then passes the gradient unchanged). ``scale`` is shaped ``(O, 1, ...)``."""
    wb, scale, outside = _extension().weight_forward(w, scaled, isa, out)
    return wb, scale.view((w.shape[0],) + (1,) * (w.dim() - 1)), not bool(outside.any())


def weight_rebuild(w: Tensor, scale: Tensor, isa: str, out: Tensor | None = None) -> Tensor:
    """``copysign(scale, W)`` per row (sign(0) = +1), the binarized weight rebuilt in backward."""
    return _extension().weight_rebuild(w, scale, isa, out)


def act_forward(x: Tensor, b1: Tensor, w: Tensor, b2: Tensor | None, isa: str) -> Tensor:
    """LearnableBias -> PReLU [-> LearnableBias] on ``x`` [N, C, H, W]: ``prelu(x + b1; w) (+ b2)`` in one pass,
    torch's float32 operations in its order (bit for bit the modules' output)."""
    return _extension().act_forward(x, b1, w, b2, isa)


def act_backward(x: Tensor, b1: Tensor, w: Tensor, grad: Tensor, isa: str) -> tuple[Tensor, Tensor]:
    """``(grad_x, weight_terms)`` of :func:`act_forward` from the output's gradient: ``grad_x`` (also the gradient
    reaching ``b1``) and PReLU's weight-gradient terms ``t > 0 ? 0 : t * grad`` (``t = x + b1``), full size, both
    torch's float32 expressions bit for bit."""
    return tuple(_extension().act_backward(x, b1, w, grad.contiguous(), isa))
