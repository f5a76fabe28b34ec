"""Binary units (conv, transposed conv, linear), the CFB bypass and the small activations of the baselines.

A unit is ``norm(op(weight_binarizer(W), activation_binarizer(x))) + bypass(x)`` (docs/METHODS.md#1-units): the norm is
a BatchNorm after the op (optional), the bypass the parameter-free channel-adaptive full-precision bypass
:func:`cfb` of the raw input, resampled to the output resolution when the unit changes it (average pool
with the unit's kernel/stride/padding when downsampling, nearest upsampling for transposed convs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindense.binary import kernels as native
from bindense.binary import quantizers as q
from bindense.binary.base import make_activation, make_weight
from bindense.binary.binarizers import DAB, FullPrecision, ScaledSignWeight, SignActivation, SignWeight
from bindense.binary.bypass import cfb, cfb_add_
from bindense.binary.fused import SAVED_FORMATS, BinaryConvFunction, ConvGeometry, native_inference
from bindense.binary.kernels import UNIT_KERNELS

BYPASSES = ("none", "cfb")
# binarizer classes (exact types) that BinaryConvFunction fuses with the convolution, and their kind names
_FUSED_ACTIVATIONS: dict[type, str] = {DAB: "dab", SignActivation: "sign"}
_FUSED_WEIGHTS: dict[type, str] = {FullPrecision: "fp32", SignWeight: "sign", ScaledSignWeight: "scaled_sign"}


class CFB(nn.Module):
    """Module form of :func:`cfb` with a fixed output width."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return cfb(x, self.out_channels)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}"


class LearnableBias(nn.Module):
    """Per-channel additive parameter ``(1, C, 1, 1)``, initialised to 0 ("move" in ReActNet)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


class BiasPReLUFunction(torch.autograd.Function):
    """``prelu(x + b1; w) (+ b2)`` as one node on the native kernels: one pass forward and one elementwise pass
    backward (the modules' composition takes 2 to 3 passes each way).

    Values and every gradient are the composition's bit for bit: the elementwise terms are torch's float32
    expressions, and the parameters' gradients are reduced by torch as autograd reduces them for the modules
    (``sum_to_size``), so training follows the same trajectory. Keeps ``x``, the size of what PReLU alone keeps.
    """

    @staticmethod
    def forward(ctx, x: Tensor, b1: Tensor, w: Tensor, b2: Tensor | None, isa: str) -> Tensor:
        ctx.isa, ctx.has_b2 = isa, b2 is not None
        ctx.save_for_backward(x, b1, w)
        return native.act_forward(x, b1, w, b2, isa)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, b1, w = ctx.saved_tensors
        grad_x, weight_terms = native.act_backward(x, b1, w, grad, ctx.isa)
        grad_b2 = grad.sum_to_size(b1.shape) if ctx.has_b2 else None
        grad_w = weight_terms.sum_to_size((w.numel(), 1, 1)).view_as(w)
        return grad_x, grad_x.sum_to_size(b1.shape), grad_w, grad_b2, None


class BiasPReLU(nn.Sequential):
    """LearnableBias -> PReLU [-> LearnableBias]: the ``prelu`` activation, or RPReLU with ``bias_after``.

    With the native kernels (``unit_kernels = "native"``, set by :func:`configure_lean`; CPU float32 NCHW) it runs
    as one :class:`BiasPReLUFunction` node, unless a hook watches one of its modules; the modules (and so the
    state-dict keys and the export) are the same either way.
    """

    unit_kernels: str = "native"

    def __init__(self, channels: int, bias_after: bool = False) -> None:
        parts = [LearnableBias(channels), nn.PReLU(channels)]
        super().__init__(*parts, *([LearnableBias(channels)] if bias_after else []))

    def forward(self, x: Tensor) -> Tensor:
        isa = self._native_isa(x)
        if isa is None:
            return super().forward(x)
        b2 = self[2].bias if len(self) == 3 else None
        return BiasPReLUFunction.apply(x, self[0].bias, self[1].weight, b2, isa)

    def _native_isa(self, x: Tensor) -> str | None:
        if self.unit_kernels != "native" or x.dim() != 4 or self[1].weight.numel() != x.shape[1]:
            return None
        if _hooked(self) or any(_hooked(m) for m in self):
            return None
        return native.native_isa(x, self[0].bias, self[1].weight, self[2].bias if len(self) == 3 else None)


class RPReLU(BiasPReLU):
    """LearnableBias -> PReLU -> LearnableBias (ReActNet, BiSR)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, bias_after=True)


class Maxout(nn.Module):
    """AdaBin's activation ``p_c * relu(x) - n_c * relu(-x)`` with p = 1, n = 0.25 at init."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pos_scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.neg_scale = nn.Parameter(torch.full((1, channels, 1, 1), 0.25))

    def forward(self, x: Tensor) -> Tensor:
        return self.pos_scale * F.relu(x) - self.neg_scale * F.relu(-x)


def _hooked(module: nn.Module) -> bool:
    """True when forward (pre-)hooks are registered on ``module`` itself."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


class _BinaryUnit:
    """Shared construction and bookkeeping of the binary units (mixed into torch's layer classes)."""

    weight: Tensor
    #: one autograd node for binarizers + op (:mod:`bindense.binary.fused`) where the binarizers allow it
    fused: bool = True
    #: format of the saved DAB input in the fused node: ``exact`` or ``bf16`` (an approximation)
    saved_activation: str = "exact"
    #: the fused node's elementwise work: ``native`` (C++ kernels where they apply) or ``eager`` (torch ops)
    unit_kernels: str = "native"

    def _setup_binary(
        self,
        in_channels: int,
        out_channels: int,
        activation: str,
        weight: str,
        bypass: str,
        norm: bool,
        channel_dim: int,
        channels_last: bool = False,
        activation_groups: int | str | None = None,
    ) -> None:
        if bypass not in BYPASSES:
            raise ValueError(f"unknown bypass {bypass!r}; expected one of {BYPASSES}")
        self.activation_binarizer = make_activation(
            activation, in_channels, channels_last=channels_last, groups=activation_groups
        )
        self.weight_binarizer = make_weight(weight, channel_dim=channel_dim)
        self.norm = nn.BatchNorm2d(out_channels) if norm else None
        self.bypass = bypass
        std = self.weight_binarizer.latent_init_std  # the weight binarizer's rule (docs/EXTENDING.md)
        if std is not None:
            nn.init.normal_(self.weight, std=std)

    @property
    def input_bits(self) -> int:
        return self.activation_binarizer.bits

    @property
    def weight_bits(self) -> int:
        return self.weight_binarizer.bits

    @property
    def is_binary(self) -> bool:
        """True when the op multiplies 1-bit activations by 1-bit weights (counted as BOPs)."""
        return self.input_bits == 1 and self.weight_bits == 1

    def binary_weight(self) -> Tensor:
        """The weight the op uses (binarized, scaled), as in the forward pass."""
        return self.weight_binarizer(self.weight)

    def _fused_op(self, x: Tensor, geometry: ConvGeometry) -> Tensor | None:
        """``op(binarized W, binarized x)`` as one :class:`BinaryConvFunction` node, or None where not fusable.

        Hooked binarizer modules run as themselves (their hooks fire, e.g. for diagnostics). Without autograd
        (evaluation) nothing is saved: a DAB unit binarizes its input with :func:`native_inference` on the native
        kernel where it applies and its weight with its weight binarizer module (torch's sums, as the export
        writes the weight), everything else runs the binarizer modules.
        """
        act = _FUSED_ACTIVATIONS.get(type(self.activation_binarizer))
        if not self.fused or act is None or q.reference_enabled() or x.dim() != 4:
            return None
        binarizer = self.activation_binarizer
        if act == "dab" and (binarizer.channels_last or binarizer.group_size is not None):
            return None  # grouped DAB (method.dab_groups) runs its own module
        if binarizer.sign_zero == "zero" or _hooked(binarizer):
            return None  # the node implements sign(0) = +1 only (method.sign_zero); a hooked binarizer runs itself
        if not torch.is_grad_enabled():
            if act != "dab" or self.unit_kernels != "native":
                return None
            isa = native.native_isa(x, binarizer.a, binarizer.k, binarizer.b)
            if isa is None:
                return None
            return native_inference(x, binarizer, self.binary_weight(), self.bias, geometry, isa)
        weights = self.weight_binarizer
        kind = _FUSED_WEIGHTS.get(type(weights))
        if kind is None or getattr(weights, "sign_zero", "plus") == "zero" or _hooked(weights):
            return None  # the weight binarizer is not fusable, zero-signed, or hooked (it must run as itself)
        dims = self.weight_binarizer.reduce_dims(self.weight) if kind == "scaled_sign" else ()
        a, k, b = (binarizer.a, binarizer.k, binarizer.b) if act == "dab" else (None, None, None)
        return BinaryConvFunction.apply(
            x, self.weight, self.bias, a, k, b, act, kind, dims, geometry, self.saved_activation, self.unit_kernels
        )

    def _finish(self, x: Tensor, y: Tensor, resample) -> Tensor:
        if self.norm is not None:
            y = self.norm(y)
        if self.bypass == "cfb":
            shortcut = x if x.shape[-2:] == y.shape[-2:] else resample(x)
            y = cfb_add_(y, shortcut) if self.fused else y + cfb(shortcut, y.shape[1])  # y: this unit's own
        return y


class BinaryConv2d(_BinaryUnit, nn.Conv2d):
    """``BN(conv(binarized W, binarized x)) + bypass(x)``; ``fp32`` on either side leaves it unbinarized."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = False,
        activation: str = "dab",
        weight: str = "scaled_sign",
        bypass: str = "cfb",
        norm: bool = True,
        dilation: int = 1,
        activation_groups: int | str | None = None,
    ) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self._setup_binary(
            in_channels, out_channels, activation, weight, bypass, norm, 0, activation_groups=activation_groups
        )

    def forward(self, x: Tensor) -> Tensor:
        y = None
        if self.padding_mode == "zeros" and not isinstance(self.padding, str):
            geometry = ConvGeometry(self.stride, self.padding, self.dilation, False, (0, 0), self.groups)
            y = self._fused_op(x, geometry)
        if y is None:
            y = self._conv_forward(self.activation_binarizer(x), self.binary_weight(), self.bias)
        return self._finish(x, y, self._pool_like_conv)

    def _pool_like_conv(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class BinaryConvTranspose2d(_BinaryUnit, nn.ConvTranspose2d):
    """Transposed counterpart of :class:`BinaryConv2d`; the bypass upsamples ``x`` (nearest) by the stride.

    ``weight_channel_dim``: axis of the ``(C_in, C_out, k, k)`` weight its scale is taken per (1: output channels;
    0: input channels, the authors' DPT ``Up``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = False,
        activation: str = "dab",
        weight: str = "scaled_sign",
        bypass: str = "cfb",
        norm: bool = True,
        activation_groups: int | str | None = None,
        weight_channel_dim: int = 1,
    ) -> None:
        nn.ConvTranspose2d.__init__(
            self, in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias
        )
        self._setup_binary(
            in_channels, out_channels, activation, weight, bypass, norm, weight_channel_dim,
            activation_groups=activation_groups,
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        geometry = ConvGeometry(self.stride, self.padding, self.dilation, True, self.output_padding, self.groups)
        y = self._fused_op(x, geometry)
        if y is not None:
            return self._finish(x, y, lambda t: F.interpolate(t, size=y.shape[-2:], mode="nearest"))
        y = F.conv_transpose2d(
            self.activation_binarizer(x),
            self.binary_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )
        return self._finish(x, y, lambda t: F.interpolate(t, size=y.shape[-2:], mode="nearest"))


class BinaryLinear(_BinaryUnit, nn.Linear):
    """Binary linear on ``(..., C)`` inputs (ViT tokens); activation parameters are channels-last.

    Norm is not supported here (token models keep their LayerNorms outside); the bypass is :func:`cfb` on the
    channel axis.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "rsign",
        weight: str = "centered_sign",
        bypass: str = "none",
        activation_groups: int | str | None = None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._setup_binary(in_features, out_features, activation, weight, bypass, False, 0, True, activation_groups)

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(self.activation_binarizer(x), self.binary_weight(), self.bias)
        if self.bypass == "cfb":
            y = y + cfb(x.movedim(-1, 1), y.shape[-1]).movedim(1, -1)
        return y


def configure_lean(
    model: nn.Module, fused: bool = True, saved_activation: str = "exact", unit_kernels: str = "native"
) -> nn.Module:
    """Set the fused node (``fused``; with it the one-node CFB add), the saved DAB format (``exact`` | ``bf16``)
    and the fused node's kernels (``native`` | ``eager``, :mod:`bindense.binary.kernels`) of every binary unit, and
    the kernels of every :class:`BiasPReLU` activation."""
    if saved_activation not in SAVED_FORMATS:
        raise ValueError(f"saved_activation must be one of {SAVED_FORMATS}, got {saved_activation!r}")
    if unit_kernels not in UNIT_KERNELS:
        raise ValueError(f"model.unit_kernels must be one of {UNIT_KERNELS}, got {unit_kernels!r}")
    for module in model.modules():
        if isinstance(module, _BinaryUnit):
            module.fused, module.saved_activation, module.unit_kernels = fused, saved_activation, unit_kernels
        elif isinstance(module, BiasPReLU):
            module.unit_kernels = unit_kernels
    return model
