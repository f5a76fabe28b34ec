"""Binary inference kernels for exported BiDense convolutions, computed from the packed sign bits.

A BiDense conv is ``y = BN(conv(W_b, DAB(x))) + cfb(x)`` with ``DAB(x) = alpha[n, c] * s[n, c, :]`` (``s`` the
+-1 signs of the shifted input, ``alpha`` one scale per sample and *input* channel) and
``W_b = scale[o] * w[o, c, :]`` (``w`` the +-1 weight signs). With ``K`` the kernel window and zero padding,

    conv[n, o, p] = scale[o] * sum_c alpha[n, c] * D[n, o, c, p],   D = sum_{k in K, inside} s[n, c, p+k] w[o, c, k]

Because ``alpha`` varies with the input channel, the dot product over channels is a *weighted* sum: a single
XNOR-popcount over (channel, window) bits cannot absorb it. Two exact formulations are implemented:

* ``gemm``: im2col of the +-1 activations (``unfold``; padding 0), each channel's rows scaled by ``alpha``, times
  the +-1 weight matrix unpacked from the bits; then ``scale``.
* ``xnor``: per input channel, the window's bits are one integer word (``|K| <= 63``: uint8 up to 8 bits, int16
  up to 15, ...); ``D = n_valid - 2 * popcount((a XOR w) AND valid)`` is an integer; then the alpha-weighted sum
  over channels and ``scale``.

Both equal the fake-quantised conv up to float summation order. They are pure torch and meant to be correct, not
fast: see docs/DEPLOY.md for their measured latency against the float path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindense.binary import BinaryConv2d, cfb
from bindense.binary.binarizers import DAB
from bindense.export.bits import pack_signs, pack_words, popcount, unpack_signs

#: cap on the int64 intermediate of the xnor kernel (elements) per chunk of output channels
XNOR_CHUNK_ELEMENTS = 1 << 23


def dab_bits(dab: DAB, x: Tensor) -> tuple[Tensor, Tensor]:
    """DAB's per-(sample, channel) scale ``alpha`` and the sign bits (True = +1) of ``s``, as in its forward."""
    s, alpha = dab.statistics(x)
    return alpha, s >= 0


class PackedBinaryConv2d(nn.Module):
    """Inference-only BiDense conv (DAB activation, ``scale * sign`` weight) from packed sign bits.

    Holds the packed bits (``packed_signs``, 1 bit per weight) and the per-output-channel ``scale``; the DAB
    parameters, BN and bypass are the original unit's. ``kernel`` is ``gemm`` or ``xnor`` (module docstring).
    """

    input_bits = 1
    weight_bits = 1
    is_binary = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
        signs: Tensor,
        scale: Tensor,
        activation: DAB,
        norm: nn.Module | None = None,
        bias: Tensor | None = None,
        bypass: str = "none",
        kernel: str = "gemm",
    ) -> None:
        super().__init__()
        if kernel not in ("gemm", "xnor"):
            raise ValueError(f"kernel must be 'gemm' or 'xnor', got {kernel!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.groups, self.bypass, self.kernel = groups, bypass, kernel
        self.activation_binarizer = activation
        self.norm = norm
        self.weight_shape = tuple(signs.shape)
        self.register_buffer("packed_signs", pack_signs(signs))
        self.register_buffer("scale", scale.float().reshape(-1).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        window = kernel_size[0] * kernel_size[1]
        if kernel == "xnor" and window > 63:
            raise ValueError(f"the xnor kernel packs one window per word (at most 63 bits): {window} weights")
        unpacked = unpack_signs(self.packed_signs, self.weight_shape)  # (O, Cg, kh, kw), from the stored bits
        g, og = groups, out_channels // groups
        if kernel == "gemm":
            pm1 = unpacked.to(torch.float32).mul_(2).sub_(1).reshape(g, og, -1)
            self.register_buffer("weight_pm1", pm1, persistent=False)
        else:
            self.register_buffer("weight_words", pack_words(unpacked.reshape(g, og, -1, window)), persistent=False)

    @staticmethod
    def supports(unit: nn.Module, encoding: str) -> bool:
        """Whether ``unit`` is a BiDense conv this class computes (BinaryConv2d + DAB + scaled sign weight)."""
        return type(unit) is BinaryConv2d and isinstance(unit.activation_binarizer, DAB) and encoding == "scaled_sign"

    @classmethod
    def from_unit(cls, unit: BinaryConv2d, packed: Tensor, scale: Tensor, kernel: str) -> PackedBinaryConv2d:
        """Build from a loaded unit and its stored parts (``packed`` sign bytes, ``scale``)."""
        signs = unpack_signs(packed, list(unit.weight.shape))
        return cls(
            unit.in_channels,
            unit.out_channels,
            unit.kernel_size,
            unit.stride,
            unit.padding,
            unit.dilation,
            unit.groups,
            signs,
            scale,
            unit.activation_binarizer,
            unit.norm,
            unit.bias,
            unit.bypass,
            kernel,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, kernel={self.kernel}, bypass={self.bypass}"
        )

    def _unfold(self, t: Tensor) -> Tensor:
        return F.unfold(t, self.kernel_size, self.dilation, self.padding, self.stride)

    def _out_size(self, h: int, w: int) -> tuple[int, int]:
        size = []
        for n, k, s, p, d in zip((h, w), self.kernel_size, self.stride, self.padding, self.dilation):
            size.append((n + 2 * p - d * (k - 1) - 1) // s + 1)
        return size[0], size[1]

    def binary_conv(self, x: Tensor) -> Tensor:
        """``conv(W_b, DAB(x))`` (before bias, BN and bypass) from the packed bits."""
        alpha, positive = dab_bits(self.activation_binarizer, x)
        n, c, h, w = x.shape
        ho, wo = self._out_size(h, w)
        if self.kernel == "gemm":
            y = self._gemm(alpha, positive)
        else:
            y = self._xnor(alpha, positive)
        return y.reshape(n, self.out_channels, ho, wo) * self.scale.view(1, -1, 1, 1)

    def _gemm(self, alpha: Tensor, positive: Tensor) -> Tensor:
        n, c = positive.shape[:2]
        pm1 = positive.to(alpha.dtype).mul_(2).sub_(1)
        cols = self._unfold(pm1)  # (N, C * K, L), 0 at padding
        cols = cols.view(n, c, -1, cols.shape[-1]).mul_(alpha.view(n, c, 1, 1))
        cols = cols.view(n, self.groups, -1, cols.shape[-1])  # (N, G, Cg * K, L)
        return torch.matmul(self.weight_pm1.to(alpha.dtype), cols)  # (N, G, Og, L)

    def _xnor(self, alpha: Tensor, positive: Tensor) -> Tensor:
        n, c, h, w = positive.shape
        window = self.kernel_size[0] * self.kernel_size[1]
        bits = self._unfold(positive.to(torch.float32)).view(n, c, window, -1)
        words = pack_words(bits.transpose(2, 3) > 0.5)  # (N, C, L): one word per channel and position
        valid = self._unfold(torch.ones(1, 1, h, w, device=positive.device)).view(window, -1)
        valid_words = pack_words(valid.t() > 0.5)  # (L,)
        full = not any(self.padding)  # every window lies inside the input: no masking needed
        n_valid = valid.sum(dim=0).to(alpha.dtype)  # (L,)
        g, og = self.groups, self.out_channels // self.groups
        cg, length = c // g, words.shape[-1]
        words = words.view(n, g, 1, cg, length)
        a = alpha.view(n, g, 1, cg).to(torch.float32)
        chunk = max(1, XNOR_CHUNK_ELEMENTS // max(1, n * g * cg * length))
        out = []
        for start in range(0, og, chunk):
            wchunk = self.weight_words[:, start : start + chunk].unsqueeze(0).unsqueeze(-1)  # (1, G, oc, Cg, 1)
            xor = words ^ wchunk  # (N, G, oc, Cg, L)
            counts = popcount(xor if full else xor & valid_words, window).to(torch.float32)
            weighted = torch.einsum("ngocl,ngc->ngol", counts, a.squeeze(2))
            out.append(n_valid * a.sum(dim=-1).unsqueeze(-1) - 2.0 * weighted)
        return torch.cat(out, dim=2).to(alpha.dtype)  # (N, G, Og, L)

    def forward(self, x: Tensor) -> Tensor:
        y = self.binary_conv(x)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        if self.norm is not None:
            y = self.norm(y)
        if self.bypass == "cfb":
            shortcut = x
            if x.shape[-2:] != y.shape[-2:]:
                shortcut = F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)
            y = y + cfb(shortcut, y.shape[1])
        return y
