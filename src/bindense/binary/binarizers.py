"""The activation and weight binarizers, each one class registered by name (:mod:`bindense.binary.base`).

Activation binarizers take the unit input and are built as ``cls(channels, channels_last=..., groups=...)``;
per-channel parameters are shaped ``(1, C, 1, 1)`` for convolutions (channels at axis 1) or ``(1, 1, C)`` for
token inputs of linears (``channels_last=True``). Weight binarizers take the latent weight and are built as
``cls(channel_dim=...)``; ``channel_dim`` names its output-channel axis (0 for Conv2d and Linear, 1 for
ConvTranspose2d; the spec may pick 0 for ConvTranspose2d, the authors' input-channel scale). A weight binarizer's
``latent_init_std`` is how the unit initialises its latent weight.

Forwards call :class:`bindense.binary.quantizers.Surrogate` objects, which pick the lean autograd Function or the
reference composition (``use_reference``) in one place.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindense.binary import quantizers as q
from bindense.binary.base import (
    ActivationBinarizer,
    Binarizer,
    WeightBinarizer,
    _param_shape,
    _stat_dims,
    register_binarizer,
    zero_at_zeros,
)


@register_binarizer("fp32", "activation", "weight")
class FullPrecision(Binarizer):
    """No quantization (the ``fp32`` choice, activations and weights); reports 32 bits."""

    bits = 32

    def __init__(self, *args, **kwargs) -> None:  # either kind's constructor arguments, none used
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


@register_binarizer("sign")
class SignActivation(ActivationBinarizer):
    """BNN activation: sign with the STE clipped at 1; no parameters."""

    def forward(self, x: Tensor) -> Tensor:
        return self._zeros(q.SIGN_CLIP(x), x)


def _open_window(out: Tensor, x: Tensor) -> Tensor:
    """``out`` (a clipped-STE sign of ``x``) with no gradient at exactly ``|x| = 1`` either: STE on ``|x| < 1``."""
    return out - (out - out.detach()) * (x.detach().abs() == 1)


@register_binarizer("bivit")
class BiViTSignActivation(SignActivation):
    """BiViT's activation quantizer: sign, straight-through only on the open window ``|x| < 1``.

    It differs from :class:`SignActivation` only at exactly +-1, which the integer-valued ``A v`` of the literal
    binary attention hits often (docs/METHODS.md, section 3).
    """

    def forward(self, x: Tensor) -> Tensor:
        return _open_window(super().forward(x), x)


@register_binarizer("rsign")
class RSign(ActivationBinarizer):
    """ReActNet: ``sign(x + beta_c)`` with a learnable per-channel shift (init 0), ApproxSign backward."""

    def __init__(self, channels: int, channels_last: bool = False, groups: int | str | None = None) -> None:
        super().__init__(channels, channels_last)
        self.bias = nn.Parameter(torch.zeros(_param_shape(channels, channels_last)))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.bias
        return self._zeros(q.APPROX_SIGN(x), x)


@register_binarizer("adabin")
class AdaBinActivation(ActivationBinarizer):
    """AdaBin: ``alpha * (sign((x - beta) / alpha) + beta)``, learnable scalars alpha = 1, beta = 0."""

    def __init__(
        self, channels: int | None = None, channels_last: bool = False, groups: int | str | None = None
    ) -> None:
        super().__init__(channels, channels_last)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.beta = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor) -> Tensor:
        u = (x - self.beta) / self.alpha
        return self.alpha * (self._zeros(q.APPROX_SIGN(u), u) + self.beta)


@register_binarizer("bisr")
class BiSRActivation(ActivationBinarizer):
    """BiSR: redistribution ``x' = k_c x + b_c`` (init 1, 0), sign forward, ``tanh(beta x')`` backward."""

    def __init__(self, channels: int, channels_last: bool = False, groups: int | str | None = None) -> None:
        super().__init__(channels, channels_last)
        shape = _param_shape(channels, channels_last)
        self.k = nn.Parameter(torch.ones(shape))
        self.b = nn.Parameter(torch.zeros(shape))
        self.beta = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.k * x + self.b
        return self._zeros(q.TANH_SIGN(x, self.beta), x)


@register_binarizer("dab")
class DAB(ActivationBinarizer):
    """BiDense distribution-adaptive binarizer: ``exp(a (mean|s| - 1)) * sign(s)``, ``s = x - (k mean(x) + b)``.

    ``a`` and ``k`` start at N(0, 1e-3^2) and ``b`` at 0, so the threshold is ~0 and the scale ~1 at init.
    Statistics are per sample and channel over the spatial axes (tokens for linears), detached, and
    recomputed at inference. The formula is :func:`bindense.binary.quantizers.dab_statistics`, shared by the
    lean Function, the fused unit and :meth:`statistics` (the reference composition is the tests' oracle).

    ``groups`` (``method.dab_groups``, docs/DEPLOY.md "DAB groups") ties the scale ``alpha``: one per group of
    ``groups`` consecutive input channels (the last group smaller where it does not divide C), or ``"all"``
    for one per sample. ``a`` then has one entry per group and ``mean|s|`` runs over the group's channels and
    the spatial axes, so that a following binary conv is a popcount per group. ``None`` (or 1) is per channel.
    The threshold ``k mean(x) + b`` stays per channel.
    """

    def __init__(self, channels: int, channels_last: bool = False, groups: int | str | None = None) -> None:
        super().__init__(channels, channels_last)
        self.group_size = dab_group_size(groups, channels)
        alphas = channels if self.group_size is None else -(-channels // self.group_size)
        shape = _param_shape(channels, channels_last)
        self.a = nn.Parameter(torch.randn(_param_shape(alphas, channels_last)) * 1e-3)
        self.k = nn.Parameter(torch.randn(shape) * 1e-3)
        self.b = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        if self.group_size is not None:
            s = self.centred(x)
            return self.alpha(s) * q.APPROX_SIGN(s)
        dims = _stat_dims(x, self.channels_last)
        out = q.DAB_SIGN(x, self.a, self.k, self.b, dims)
        if self.sign_zero == "zero":  # s recomputed with the same ops (bit-identical); docs/METHODS.md
            with torch.no_grad():
                s, _, mean_abs_s, _ = q.dab_statistics(x, self.a, self.k, self.b, dims)
                zero = (s == 0).to(s.dtype)
            # value 0 at s == 0; d/da then drops those positions, as alpha * torch.sign(s) would
            alpha = torch.exp(self.a * (mean_abs_s - 1.0))
            out = zero_at_zeros(out, s) - zero * (alpha - alpha.detach())
        return out

    @torch.no_grad()
    def statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``s`` and the per-channel scale ``alpha`` of :meth:`forward` (no autograd), e.g. for packed inference."""
        s, _, _, alpha = q.dab_statistics(x, self.a, self.k, self.b, _stat_dims(x, self.channels_last))
        return s, alpha

    def centred(self, x: Tensor) -> Tensor:
        """``s = x - (k mean(x) + b)``, the mean detached (its sign is the binary activation)."""
        return x - (self.k * x.detach().mean(dim=_stat_dims(x, self.channels_last), keepdim=True) + self.b)

    def group_alpha(self, s: Tensor) -> Tensor:
        """Grouped scale from ``s``, one per (sample, group): ``(B, n_groups)``, differentiable in ``a`` only."""
        with torch.no_grad():
            per_channel = s.abs().mean(dim=_stat_dims(s, self.channels_last)).flatten(1)  # (B, C)
        return self.group_alpha_from(per_channel)

    def group_alpha_from(self, per_channel_mean_abs: Tensor) -> Tensor:
        """Grouped scale ``(B, n_groups)`` from ``mean|s|`` per (sample, channel) ``(B, C)``: the group means of it,
        through ``exp(a (. - 1))`` (differentiable in ``a`` only)."""
        with torch.no_grad():
            size, channels = self.group_size, per_channel_mean_abs.shape[1]
            groups = -(-channels // size)
            padded = F.pad(per_channel_mean_abs, (0, groups * size - channels))
            sums = padded.unflatten(1, (groups, size)).sum(-1)
            counts = torch.full((groups,), float(size), dtype=sums.dtype, device=sums.device)
            counts[-1] = channels - (groups - 1) * size
            mean_abs = sums / counts
        return torch.exp(self.a.flatten() * (mean_abs - 1.0))

    def alpha(self, s: Tensor) -> Tensor:
        """The grouped scale repeated over each group's channels, broadcastable to ``s``."""
        per_channel = self.group_alpha(s).repeat_interleave(self.group_size, dim=1)[:, : self.channels]
        return per_channel.reshape((s.shape[0],) + _param_shape(self.channels, self.channels_last)[1:])


def dab_group_size(groups: int | str | None, channels: int) -> int | None:
    """Channels per DAB scale for ``method.dab_groups`` (None = per channel; ``"all"`` = every channel)."""
    if groups is None:
        return None
    if groups == "all":
        return channels
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"method.dab_groups={groups!r}: expected null, a positive integer or 'all'")
    return None if groups == 1 else min(groups, channels)


@register_binarizer("sign")
class SignWeight(WeightBinarizer):
    """BNN weights: ``sign(W)`` with no scale, STE clipped at |W| <= 1."""

    def forward(self, w: Tensor) -> Tensor:
        return self._zeros(q.SIGN_CLIP(w), w)


@register_binarizer("scaled_sign")
class ScaledSignWeight(WeightBinarizer):
    """ReActNet/BiDense weights: detached ``mean|W|`` per ``channel_dim`` slice times ``sign(W)``, clipped STE.

    For a ConvTranspose2d weight ``(C_in, C_out, k, k)``, ``channel_dim=0`` averages per input channel (the
    authors' DPT ``Up``), ``channel_dim=1`` per output channel (docs/METHODS.md, section 3.1).
    """

    def __init__(self, channel_dim: int = 0) -> None:
        super().__init__(channel_dim)
        self.channel_dim = channel_dim

    def reduce_dims(self, w: Tensor) -> tuple[int, ...]:
        return tuple(d for d in range(w.dim()) if d != self.channel_dim)

    def forward(self, w: Tensor) -> Tensor:
        return self._zeros(q.SCALED_SIGN_CLIP(w, self.reduce_dims(w)), w)


@register_binarizer("centered_sign")
class CenteredScaledSignWeight(ScaledSignWeight):
    """Binary linears of the paper-time BiDense ViT: ``mean|W_o|`` of the RAW row times ``sign(W_o - mean(W_o))``.

    The scale is detached; the STE is clipped at ``|W - mean| <= 1`` and passes the gradient unscaled (through
    the centring). :class:`BiViTSignWeight` is the released code's variant (gradient times the scale).
    """

    scale_gradient = False

    def forward(self, w: Tensor) -> Tensor:
        dims = self.reduce_dims(w)
        scale = w.detach().abs().mean(dim=dims, keepdim=True)
        centred = w - w.mean(dim=dims, keepdim=True)
        v = q.SIGN_CLIP(centred)
        if self.scale_gradient:  # BiViT's quantizer: open STE window |W - mean| < 1
            v = _open_window(v, centred)
        # exactly +-scale in value; the gradient is v's (unscaled) or scale * v's
        out = scale * v if self.scale_gradient else (scale * v).detach() + (v - v.detach())
        return self._zeros(out, centred)


@register_binarizer("bivit_sign")
class BiViTSignWeight(CenteredScaledSignWeight):
    """Binary linears of the released BiViT ViT, ``scale * STE(sign(W - mean))``: the gradient is scaled too, and
    the STE window is open (``|W - mean| < 1``)."""

    scale_gradient = True


@register_binarizer("adabin")
class AdaBinWeight(WeightBinarizer):
    """AdaBin weights: ``alpha_w * sign((W - beta_w) / alpha_w) + beta_w`` per output channel, not detached.

    ``beta_w = mean(W)``, ``alpha_w = sqrt(sum((W - beta_w)^2) / n)`` with n the fan-in
    ``kh * kw * C_in / groups`` (docs/METHODS.md, section 5). The sign backward is EDE with ``t`` and
    ``k = max(1/t, 1)`` set from training progress by :meth:`set_progress` (t from ``t_min`` to ``t_max`` on a
    log scale). Its latent weights keep torch's default init (the adaptive scale normalises them).
    """

    latent_init_std = None

    def __init__(self, channel_dim: int = 0, t_min: float = 1e-3, t_max: float = 10.0) -> None:
        super().__init__(channel_dim)
        self.channel_dim = channel_dim
        self.t_min, self.t_max = t_min, t_max
        self.set_progress(0.0)

    def set_progress(self, progress: float) -> None:
        """Set EDE's ``t`` for a training progress in [0, 1] (epoch / max_epochs)."""
        progress = min(max(progress, 0.0), 1.0)
        self.t = self.t_min * math.pow(self.t_max / self.t_min, progress)
        self.k = max(1.0 / self.t, 1.0)

    def forward(self, w: Tensor) -> Tensor:
        dims = tuple(d for d in range(w.dim()) if d != self.channel_dim)
        beta = w.mean(dim=dims, keepdim=True)
        centred = w - beta
        fan_in = centred[0].numel() if self.channel_dim == 0 else centred.numel() // centred.shape[1]
        alpha = torch.sqrt(centred.square().sum(dim=dims, keepdim=True) / fan_in)
        u = centred / alpha
        return alpha * self._zeros(q.EDE_SIGN(u, self.k, self.t), u) + beta


def set_ede_progress(model: nn.Module, progress: float) -> None:
    """Advance the EDE schedule of every AdaBin weight binarizer in ``model`` (called once per epoch)."""
    for module in model.modules():
        if isinstance(module, AdaBinWeight):
            module.set_progress(progress)
