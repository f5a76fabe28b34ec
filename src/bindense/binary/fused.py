"""One autograd node for the core of a binary unit: activation binarizer -> weight binarizer -> convolution.

Composed from separate nodes, autograd keeps for the backward pass the binarizer's input (its surrogate needs it),
the binarized activation (the convolution's saved input, full size in float) and the binarized weight (a full-size
temporary per unit). :class:`BinaryConvFunction` keeps only what the formulas need and rebuilds the rest in
backward, bit for bit:

- DAB (``dab``): ``s`` (float; the ApproxSign surrogate reads ``|s|``) and per-(sample, channel) statistics; the
  binarized activation ``alpha * sign(s)`` is rebuilt from ``s``. The native kernels keep the unit's input ``x``
  instead (the same size, often alive anyway, and one store less in forward) with the per-plane threshold, and
  recompute ``s = (x - thr) + 0`` bit for bit where backward reads it. With ``saved="bf16"`` (an approximation, off
  by default) ``s`` is kept as bfloat16 plus its signs packed 1 bit per element: the forward and the rebuilt
  activation stay exact, the surrogate reads a rounded ``|s|``.
- sign (``sign``, BNN): the signs and the clip mask ``|x| <= 1``, both packed 1 bit per element.
- weights: nothing of the weight's size; ``mean|W|`` per output channel (scaled sign) and the latent weight (a
  parameter, alive anyway) rebuild ``W_b`` and the clipped-STE mask in backward.

The convolution's gradients come from ``torch.ops.aten.convolution_backward`` with the same arguments autograd
uses for ``torch.convolution``, so values and gradients equal the unfused composition (docs/TRAINING.md).
Works on any device (CPU and CUDA kernels of the same ops). With ``kernels="native"`` the DAB and scaled-sign
weight work runs in the C++ kernels of :mod:`bindense.binary.kernels` where they apply (CPU float32 NCHW): same
saved tensors, statistics summed in another order (within float32 rounding of the formulas).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bindense.binary import kernels as native
from bindense.binary.quantizers import _signed, binary_sign, dab_parameter_grads, dab_statistics
from bindense.binary.workspace import scratch

#: Formats of the saved DAB input: ``exact`` (float32, default) or ``bf16`` (bfloat16 + packed signs).
SAVED_FORMATS = ("exact", "bf16")
#: Activation binarizers and weight binarizers the fused node implements.
ACTIVATION_KINDS = ("dab", "sign")
WEIGHT_KINDS = ("fp32", "sign", "scaled_sign")

_SHIFTS = torch.arange(8, dtype=torch.uint8)


def pack_bits(mask: Tensor) -> Tensor:
    """A boolean tensor packed 8 elements per byte (little-endian bit order), flat, zero-padded to a byte."""
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    bits = flat.view(-1, 8).to(torch.uint8) << _SHIFTS.to(flat.device)
    return bits.sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of :func:`pack_bits`: a uint8 tensor of 0/1 values shaped ``shape``."""
    n = shape.numel()
    bits = (packed.unsqueeze(1) >> _SHIFTS.to(packed.device)) & 1
    return bits.view(-1)[:n].view(shape)


def _signs_from_bits(packed: Tensor, shape: torch.Size, magnitude: Tensor, dtype: torch.dtype) -> Tensor:
    """``magnitude`` where the bit is 0 and ``-magnitude`` where it is 1 (exactly), shaped ``shape``."""
    sign = unpack_bits(packed, shape).to(dtype).mul_(-2.0).add_(1.0)
    return sign.mul_(magnitude)


@dataclass(frozen=True)
class ConvGeometry:
    """The non-tensor arguments of ``torch.convolution``."""

    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    transposed: bool
    output_padding: tuple[int, ...]
    groups: int

    def __call__(self, x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        return torch.convolution(
            x, w, bias, self.stride, self.padding, self.dilation, self.transposed, self.output_padding, self.groups
        )

    def backward(self, grad: Tensor, x: Tensor, w: Tensor, bias: Tensor | None, mask: list[bool]):
        bias_sizes = [bias.shape[0]] if bias is not None else None
        return torch.ops.aten.convolution_backward(
            grad, x, w, bias_sizes, list(self.stride), list(self.padding), list(self.dilation), self.transposed,
            list(self.output_padding), self.groups, mask,
        )  # fmt: skip


def binarize_weight(w: Tensor, kind: str, dims: tuple[int, ...]) -> tuple[Tensor, Tensor | None]:
    """The weight the convolution uses and the per-channel scale (``scaled_sign``), as the weight binarizers do."""
    if kind == "scaled_sign":
        scale = w.abs().mean(dim=dims, keepdim=True)
        return _signed(scale, w), scale
    if kind == "sign":
        return binary_sign(w), None
    return w, None


def _all_inside(w: Tensor, kind: str) -> bool:
    """Whether every latent weight lies in [-1, 1], where the clipped STE passes gradients unchanged.

    One read-only pass (``aminmax``) instead of a mask in backward, on CPU; elsewhere (CUDA: the answer would
    cost a device sync per unit; meta tensors: no values; under ``torch.compile``: a data-dependent branch, one
    graph break per unit) the mask is always applied (False).
    """
    if kind == "fp32" or w.device.type != "cpu" or torch.compiler.is_compiling():
        return kind == "fp32"
    lo, hi = torch.aminmax(w)
    return bool(lo >= -1) and bool(hi <= 1)


def _native_weight(w: Tensor, kind: str, dims: tuple[int, ...]) -> bool:
    """Whether the native weight kernels implement ``kind`` over ``dims``: scaled signs whose scale is per row (dim
    0: the output channels of a Conv2d weight, the input channels of a transposed one)."""
    return kind == "scaled_sign" and dims == tuple(range(1, w.dim()))


def _weight_grad(grad_wb: Tensor, w: Tensor, all_inside: bool) -> Tensor:
    """Clipped STE of the sign weights (zero where ``|W| > 1``), in ``grad_wb``'s buffer."""
    return grad_wb if all_inside else grad_wb.mul_(w.abs() <= 1)


def native_inference(x: Tensor, dab, weight: Tensor, bias: Tensor | None, geometry: ConvGeometry, isa: str) -> Tensor:
    """A DAB unit's forward without autograd (evaluation): ``conv(xb, weight) + bias`` with the binarized input from
    the native DAB kernel on ``isa`` (one pass over ``x`` per plane instead of six, nothing kept; the value of
    :class:`BinaryConvFunction`'s forward), ``weight`` already binarized by the caller."""
    with scratch().lend(x) as out:
        return geometry(native.dab_forward(x, dab.a, dab.k, dab.b, isa, out)[0], weight, bias)


class BinaryConvFunction(torch.autograd.Function):
    """``conv(binarize_activation(x), binarize_weight(W)) + bias`` as one node with lean saved tensors.

    ``act``: ``dab`` (with DAB's parameters ``a``, ``k``, ``b``) or ``sign`` (``a = k = b = None``);
    ``weight_kind``: ``fp32``, ``sign`` or ``scaled_sign`` (mean|W| over ``weight_dims``); ``geometry``: the
    convolution's arguments; ``saved``: one of :data:`SAVED_FORMATS` (DAB only); ``kernels``: one of
    :data:`bindense.binary.kernels.UNIT_KERNELS` (``native``: the C++ kernels where they apply).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, a, k, b, act, weight_kind, weight_dims, geometry, saved, kernels="eager"):
        ctx.act, ctx.weight_kind, ctx.geometry, ctx.saved = act, weight_kind, geometry, saved
        ctx.shape, ctx.has_bias = x.shape, bias is not None
        ctx.isa = native.native_isa(x, weight, a, k, b) if kernels == "native" else None
        # DAB on the native kernels keeps x and the per-plane threshold: s is recomputed where backward reads it
        ctx.native_dab = act == "dab" and ctx.isa is not None and saved == "exact"
        ctx.weight_isa = ctx.isa if _native_weight(weight, weight_kind, weight_dims) else None
        # the native kernels' xb and wb are scratch (the convolution reads them once): large ones are lent
        workspace = scratch()
        with (
            workspace.lend(weight if ctx.weight_isa is not None else None) as wb_out,
            workspace.lend(x if ctx.native_dab else None) as xb_out,
        ):
            if ctx.weight_isa is not None:
                wb, scale, ctx.all_inside = native.weight_forward(
                    weight, weight_kind == "scaled_sign", ctx.weight_isa, wb_out
                )
            else:
                wb, scale = binarize_weight(weight, weight_kind, weight_dims)
                ctx.all_inside = _all_inside(weight, weight_kind)
            if act == "dab":
                if ctx.native_dab:
                    xb, mean_x, mean_abs_s, alpha, thr = native.dab_forward(x, a, k, b, ctx.isa, xb_out)
                    stored = (x, thr)
                else:
                    dims = tuple(range(2, x.dim()))
                    s, mean_x, mean_abs_s, alpha = dab_statistics(x, a, k, b, dims)
                    s.add_(0.0)  # -0.0 -> +0.0 (same |s|): one copysign binarizes it to +alpha, here and in backward
                    xb = torch.copysign(alpha, s)
                    stored = (s.to(torch.bfloat16), pack_bits(s < 0)) if saved == "bf16" else (s, s.new_empty(0))
                ctx.save_for_backward(*stored, weight, scale, bias, a, mean_x, mean_abs_s, alpha)
            else:
                xb = binary_sign(x)
                ctx.save_for_backward(pack_bits(xb < 0), pack_bits(x.abs() <= 1), weight, scale, bias)
            return geometry(xb, wb, bias)

    @staticmethod
    def backward(ctx, grad):
        needs = ctx.needs_input_grad
        need_x = needs[0] or (ctx.act == "dab" and any(needs[3:6]))
        if ctx.native_dab and need_x:
            return _native_dab_backward(ctx, grad)
        if ctx.act == "dab":
            # stored, extra: (x, thr) with the native kernels, else (s, nothing) or (s in bfloat16, its sign bits)
            stored, extra, weight, scale, bias, a, mean_x, mean_abs_s, alpha = ctx.saved_tensors
            if ctx.native_dab:
                xb = native.dab_rebuild(stored, extra, alpha, ctx.isa)
            elif ctx.saved == "bf16":
                xb = _signs_from_bits(extra, ctx.shape, alpha, alpha.dtype)
            else:
                xb = torch.copysign(alpha, stored)
        else:
            signs, inside, weight, scale, bias = ctx.saved_tensors
            xb = _signs_from_bits(
                signs, ctx.shape, torch.ones((), dtype=weight.dtype, device=weight.device), weight.dtype
            )
        wb = _rebuild_weight(ctx, weight, scale)
        grad_xb, grad_wb, grad_bias = ctx.geometry.backward(
            grad, xb, wb, bias, [need_x, needs[1], ctx.has_bias and needs[2]]
        )
        del wb
        grad_w = _weight_grad(grad_wb, weight, ctx.all_inside) if needs[1] else None
        grad_x = grad_a = grad_k = grad_b = None
        none = (None,) * 6
        if ctx.act == "sign":
            if needs[0]:
                grad_x = grad_xb.mul_(unpack_bits(inside, ctx.shape))
            return grad_x, grad_w, grad_bias, None, None, None, *none
        if need_x:
            dims = tuple(range(2, len(ctx.shape)))
            s_abs = stored.to(alpha.dtype).abs() if ctx.saved == "bf16" else stored.abs()
            sum_g_xb = xb.mul_(grad_xb).sum(dim=dims, keepdim=True)  # in xb's buffer
            del xb
            # dL/ds = g * alpha * 2 max(1 - |s|, 0) = min(|s| - 1, 0) * g * (-2 alpha), as DABFunction
            grad_x = s_abs.sub_(1.0).clamp_(max=0.0).mul_(grad_xb).mul_(-2.0 * alpha)
            per_sample = grad_x.sum(dim=dims, keepdim=True)
            grad_a, grad_k, grad_b = dab_parameter_grads(sum_g_xb, per_sample, a, mean_x, mean_abs_s)
        return grad_x, grad_w, grad_bias, grad_a, grad_k, grad_b, *none


def _rebuild_weight(ctx, weight: Tensor, scale: Tensor | None, out: Tensor | None = None) -> Tensor:
    """The binarized weight of the forward pass, rebuilt from the latent weight and its scale (the native kernel
    writes it into ``out`` where given)."""
    if ctx.weight_isa is not None:
        return native.weight_rebuild(weight, scale, ctx.weight_isa, out)
    return _signed(scale, weight) if scale is not None else binarize_weight(weight, ctx.weight_kind, ())[0]


def _native_dab_backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
    """:class:`BinaryConvFunction`'s backward on the native DAB kernels when the input's gradient is wanted.

    The convolution's input gradient comes first (it reads only the weights), then DAB's backward kernel turns it
    into ``x``'s gradient and rebuilds the binarized input in the same pass over ``x``, and only then the weight
    (and bias) gradient reads that binarized input: one pass over ``x`` less than rebuilding it first. The two
    ``convolution_backward`` calls are the primitives one call runs (the same values); the stand-ins for the
    tensors whose values a gradient does not read (``x`` for ``xb``, ``W`` for ``W_b``) have their shapes and
    layouts. The rebuilt ``W_b`` and ``xb`` are scratch, one at a time (large ones lent by the workspace).
    """
    needs = ctx.needs_input_grad
    x, thr, weight, scale, bias, a, mean_x, mean_abs_s, alpha = ctx.saved_tensors
    geometry, weight_mask = ctx.geometry, [needs[1], ctx.has_bias and needs[2]]
    workspace = scratch()
    with workspace.lend(weight if ctx.weight_isa is not None else None) as out:
        grad_xb = geometry.backward(grad, x, _rebuild_weight(ctx, weight, scale, out), bias, [True, False, False])[0]
    rebuild = any(weight_mask)
    grad_w = grad_bias = None
    with workspace.lend(x if rebuild else None) as out:
        grad_x, sum_gxb, per_sample, *xb = native.dab_backward(x, thr, grad_xb, alpha, ctx.isa, rebuild, out)
        if rebuild:
            _, grad_wb, grad_bias = geometry.backward(grad, xb.pop(), weight, bias, [False, *weight_mask])
            grad_w = _weight_grad(grad_wb, weight, ctx.all_inside) if needs[1] else None
    return grad_x, grad_w, grad_bias, *dab_parameter_grads(sum_gxb, per_sample, a, mean_x, mean_abs_s), *(None,) * 6
