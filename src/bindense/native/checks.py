"""Argument checking for the binary convolutions: one :class:`ConvSpec` per call, every bad input a clear error."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bindense.native.prepared import PreparedWeights


def _pair(v: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 2:
        raise ValueError(f"bindense.native: {name} must be an int or a pair of ints, got {v!r}")
    return t  # type: ignore[return-value]


def _tensor(t: torch.Tensor, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"bindense.native: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"bindense.native: {name} must be {dtype}, got {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"bindense.native: {name} must be on the CPU, got device {t.device}")
    if tuple(t.shape) != shape:
        raise ValueError(f"bindense.native: {name} must have shape {list(shape)}, got {list(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"bindense.native: {name} must be contiguous (call .contiguous() first)")
    return t


@dataclass(frozen=True)
class ConvSpec:
    """A checked binary convolution call (shapes consistent, dtypes and layout as the kernels expect)."""

    x_bits: torch.Tensor
    w_bits: torch.Tensor | PreparedWeights
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    out_hw: tuple[int, int]
    channel_group_size: int | None = None
    group_scale: torch.Tensor | None = None
    out_scale: torch.Tensor | None = None
    out_bias: torch.Tensor | None = None
    residual: torch.Tensor | None = None


def check_conv(
    x_bits: torch.Tensor,
    w_bits: torch.Tensor | PreparedWeights,
    in_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    groups: int = 1,
    channel_group_size: int | None = None,
    group_scale: torch.Tensor | None = None,
    out_scale: torch.Tensor | None = None,
    out_bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    transposed: bool = False,
) -> ConvSpec:
    """Validate a call of ``binary_conv2d`` / ``binary_conv_transpose2d`` and compute its output size."""
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"bindense.native: kernel_size/stride must be >= 1 and padding >= 0, got "
                         f"kernel_size={(kh, kw)}, stride={(sh, sw)}, padding={(ph, pw)}")
    if not isinstance(x_bits, torch.Tensor) or x_bits.dim() != 4:
        raise ValueError("bindense.native: x_bits must be an int64 tensor [N, H, W, ceil(C/64)] "
                         "(from pack_activations)")
    prepared = isinstance(w_bits, PreparedWeights) and not transposed
    if not prepared and (not isinstance(w_bits, torch.Tensor) or w_bits.dim() != 4):
        raise ValueError("bindense.native: w_bits must be an int64 tensor [O, kh, kw, ceil(Cg/64)] "
                         "(from pack_weights)" + ("" if transposed else " or PreparedWeights (from prepare_weights)"))
    n, h, w, _ = x_bits.shape
    if in_channels < 1 or groups < 1 or in_channels % groups:
        raise ValueError(f"bindense.native: in_channels={in_channels} must be a positive multiple of "
                         f"groups={groups}")
    cg = in_channels // groups
    _tensor(x_bits, "x_bits", torch.int64, (n, h, w, (in_channels + 63) // 64))
    o = w_bits.out_channels if prepared else w_bits.shape[0]
    if transposed:
        if groups != 1:
            raise ValueError("bindense.native: binary_conv_transpose2d supports groups=1 only")
        if (kh, kw) != (sh, sw):
            raise ValueError(f"bindense.native: binary_conv_transpose2d needs kernel_size == stride "
                             f"(DPT's 2x2/2 and 4x4/4), got kernel_size={(kh, kw)}, stride={(sh, sw)}")
        ho, wo = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
    else:
        if o % groups:
            raise ValueError(f"bindense.native: out channels {o} (w_bits.shape[0]) must be a multiple of "
                             f"groups={groups}")
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if prepared:
        w_bits.check_call(in_channels, (kh, kw), groups, channel_group_size)
    else:
        _tensor(w_bits, "w_bits", torch.int64, (o, kh, kw, (cg + 63) // 64))
    if ho < 1 or wo < 1:
        raise ValueError(f"bindense.native: input {h}x{w} is too small for kernel {(kh, kw)}, stride "
                         f"{(sh, sw)}, padding {(ph, pw)} (output {ho}x{wo})")
    if (channel_group_size is None) != (group_scale is None):
        raise ValueError("bindense.native: channel_group_size and group_scale go together (both or neither)")
    if channel_group_size is not None:
        g = int(channel_group_size)
        if g < 1:
            raise ValueError(f"bindense.native: channel_group_size must be >= 1, got {g}")
        if groups > 1 and cg % g and g % cg:
            raise ValueError(f"bindense.native: with groups={groups} (channels per group {cg}), "
                             f"channel_group_size={g} must divide {cg} or be a multiple of it")
        _tensor(group_scale, "group_scale", torch.float32, (n, (in_channels + g - 1) // g))
    for name, t in (("out_scale", out_scale), ("out_bias", out_bias)):
        if t is not None:
            _tensor(t, name, torch.float32, (o,))
    if residual is not None:  # [N, O, Ho, Wo], or another channel count: cfb(residual, O) (CFB's tiling / merge)
        rc = residual.shape[1] if isinstance(residual, torch.Tensor) and residual.dim() == 4 else o
        _tensor(residual, "residual", torch.float32, (n, rc if rc >= 1 else o, ho, wo))
    return ConvSpec(x_bits, w_bits, in_channels, o, (kh, kw), (sh, sw), (ph, pw), groups, (ho, wo),
                    channel_group_size, group_scale, out_scale, out_bias, residual)


def check_output(out: torch.Tensor, spec: ConvSpec) -> None:
    """A caller's output buffer must be a contiguous float32 CPU tensor of the conv's output shape."""
    n = spec.x_bits.shape[0]
    _tensor(out, "out", torch.float32, (n, spec.out_channels, *spec.out_hw))


def check_weights(
    w_bits: torch.Tensor, in_channels: int, kernel_size: int | tuple[int, int], groups: int,
    channel_group_size: int | None,
) -> tuple[int, int]:
    """Validate the arguments of ``prepare_weights`` (the weight half of :func:`check_conv`); the kernel size."""
    kh, kw = _pair(kernel_size, "kernel_size")
    if in_channels < 1 or groups < 1 or in_channels % groups:
        raise ValueError(f"bindense.native: in_channels={in_channels} must be a positive multiple of "
                         f"groups={groups}")
    if not isinstance(w_bits, torch.Tensor) or w_bits.dim() != 4:
        raise ValueError("bindense.native: w_bits must be an int64 tensor [O, kh, kw, ceil(Cg/64)] "
                         "(from pack_weights)")
    o, cg = w_bits.shape[0], in_channels // groups
    if o % groups:
        raise ValueError(f"bindense.native: out channels {o} (w_bits.shape[0]) must be a multiple of "
                         f"groups={groups}")
    _tensor(w_bits, "w_bits", torch.int64, (o, kh, kw, (cg + 63) // 64))
    if channel_group_size is not None and (channel_group_size < 1 or (groups > 1 and cg % channel_group_size
                                                                      and channel_group_size % cg)):
        raise ValueError(f"bindense.native: channel_group_size={channel_group_size} must be >= 1 and, with "
                         f"groups={groups}, divide {cg} or be a multiple of it")
    return kh, kw
