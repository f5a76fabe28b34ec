"""Pure-torch binary convolutions on bit-packed tensors: the oracle of the native kernels and their fallback.

Every function here unpacks the bits to +-1 floats and calls torch's float convolution, so it is slow but
obviously right: zero padding contributes 0, each tap and channel contributes sign_x * sign_w.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bindense.native.checks import ConvSpec

_BYTE_WEIGHTS = (2 ** torch.arange(8, dtype=torch.int32)).to(torch.uint8)


def words(channels: int) -> int:
    """Number of 64-bit words holding ``channels`` bits."""
    return (channels + 63) // 64


def pack_last(bits: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor [..., C] along its last dim into int64 words [..., ceil(C/64)] (bit j of word k =
    element 64k + j; unused high bits 0)."""
    c = bits.shape[-1]
    k = words(c)
    padded = F.pad(bits.to(torch.uint8), (0, 64 * k - c))
    by = (padded.view(*bits.shape[:-1], 8 * k, 8) * _BYTE_WEIGHTS).sum(-1, dtype=torch.uint8)
    return by.contiguous().view(torch.int64).view(*bits.shape[:-1], k)


def unpack_last(packed: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of :func:`pack_last`: int64 words [..., K] to +-1 float32 [..., channels]."""
    by = packed.contiguous().view(torch.uint8).view(*packed.shape[:-1], packed.shape[-1] * 8, 1)
    bits = (by & _BYTE_WEIGHTS) != 0
    bits = bits.view(*packed.shape[:-1], packed.shape[-1] * 64)[..., :channels]
    return bits.to(torch.float32) * 2 - 1


def pack_activations(x: torch.Tensor, threshold: torch.Tensor | None = None) -> torch.Tensor:
    """[N, C, H, W] float -> int64 [N, H, W, ceil(C/64)], bit = (x - threshold >= 0)."""
    if threshold is not None:
        t = threshold.to(x.dtype)
        x = x - (t[None, :, None, None] if t.dim() == 1 else t[:, :, None, None])
    return pack_last((x >= 0).permute(0, 2, 3, 1))


def pack_weights(w: torch.Tensor) -> torch.Tensor:
    """[O, Cg, kh, kw] float -> int64 [O, kh, kw, ceil(Cg/64)], bit = (w >= 0)."""
    return pack_last((w >= 0).permute(0, 2, 3, 1))


def unpack_activations(x_bits: torch.Tensor, channels: int) -> torch.Tensor:
    """int64 [N, H, W, K] -> +-1 float32 [N, channels, H, W]."""
    return unpack_last(x_bits, channels).permute(0, 3, 1, 2).contiguous()


def unpack_weights(w_bits: torch.Tensor, channels: int) -> torch.Tensor:
    """int64 [O, kh, kw, K] -> +-1 float32 [O, channels, kh, kw]."""
    return unpack_last(w_bits, channels).permute(0, 3, 1, 2).contiguous()


def epilogue(s: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """y = out_scale * S + out_bias + residual (each optional)."""
    if spec.out_scale is not None:
        s = s * spec.out_scale[None, :, None, None]
    if spec.out_bias is not None:
        s = s + spec.out_bias[None, :, None, None]
    if spec.residual is not None:  # another channel count: CFB's tiling / channel merge over the outputs
        from bindense.binary.layers import cfb  # noqa: PLC0415

        s = s + cfb(spec.residual, s.shape[1])
    return s


def prelu_epilogue(y: torch.Tensor, prelu: tuple[torch.Tensor | None, ...] | None, relu: bool) -> torch.Tensor:
    """The activation after a unit: ``prelu(y + bias, slope) + bias_after`` (each optional), then the ReLU."""
    if prelu is not None:
        bias, slope, bias_after = prelu
        y = y + bias.view(1, -1, 1, 1) if bias is not None else y
        y = torch.where(y > 0, y, slope.view(1, -1, 1, 1) * y) if slope is not None else y
        y = y + bias_after.view(1, -1, 1, 1) if bias_after is not None else y
    return y.clamp_min(0) if relu else y


def binary_conv2d(spec: ConvSpec) -> torch.Tensor:
    """Oracle of :func:`bindense.native.binary_conv2d` for a checked spec."""
    x = unpack_activations(spec.x_bits, spec.in_channels)
    w = unpack_weights(spec.w_bits, spec.in_channels // spec.groups)
    if spec.channel_group_size is not None:
        idx = torch.arange(spec.in_channels) // spec.channel_group_size
        x = x * spec.group_scale[:, idx, None, None].to(torch.float32)
    s = F.conv2d(x, w, stride=spec.stride, padding=spec.padding, groups=spec.groups)
    return epilogue(s, spec)


def binary_conv_transpose2d(spec: ConvSpec) -> torch.Tensor:
    """Oracle of :func:`bindense.native.binary_conv_transpose2d` for a checked spec."""
    x = unpack_activations(spec.x_bits, spec.in_channels)
    w = unpack_weights(spec.w_bits, spec.in_channels).permute(1, 0, 2, 3)
    s = F.conv_transpose2d(x, w, stride=spec.stride, padding=spec.padding)
    return epilogue(s, spec)


def sign_depthwise_conv2d(x: torch.Tensor, w_signs: torch.Tensor, kernel_size: tuple[int, int],
                          stride: tuple[int, int], padding: tuple[int, int], threshold: torch.Tensor | None,
                          dab_a: torch.Tensor | None, out_scale: torch.Tensor | None, out_bias: torch.Tensor | None,
                          residual: torch.Tensor | None, relu: bool,
                          channel_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle of :func:`bindense.native.sign_depthwise_conv2d`: float conv of the +-1 signs, then the scales."""
    n, c = x.shape[:2]
    s = x - threshold.view(n, c, 1, 1) if threshold is not None else x
    signs = torch.where(s >= 0, 1.0, -1.0)
    w = w_signs.float().view(c, 1, *kernel_size)
    y = torch.nn.functional.conv2d(signs, w, None, stride, padding, 1, c)
    scale = torch.exp(dab_a * (s.abs().mean(dim=(2, 3)) - 1.0)) if dab_a is not None else x.new_ones(n, c)
    scale = channel_scale if channel_scale is not None else scale
    y = y * scale.view(n, c, 1, 1)
    if out_scale is not None:
        y = y * out_scale.view(1, c, 1, 1)
    if out_bias is not None:
        y = y + out_bias.view(1, c, 1, 1)
    if residual is not None:
        y = y + residual
    return (y.clamp_min(0) if relu else y), scale
