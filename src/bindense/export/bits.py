"""Sign bits: packing +-1 tensors to bytes / int64 words, and a popcount for int64 words in pure torch."""

from __future__ import annotations

import torch
from torch import Tensor

_BIT_WEIGHTS = 1 << torch.arange(8, dtype=torch.int64)  # bit j of a byte is element 8 * i + j (little-endian)


def pack_signs(positive: Tensor) -> Tensor:
    """Pack a boolean tensor (True = +1) in C order into ``ceil(n / 8)`` bytes, bit j of byte i = element 8i+j."""
    flat = positive.reshape(-1).to(torch.int64)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS.to(flat.device)).sum(dim=1).to(torch.uint8)


def unpack_signs(packed: Tensor, shape: tuple[int, ...] | list[int]) -> Tensor:
    """Inverse of :func:`pack_signs`: the boolean tensor of ``shape`` (True = +1)."""
    n = 1
    for s in shape:
        n *= int(s)
    if packed.numel() != (n + 7) // 8:
        raise ValueError(f"{packed.numel()} packed bytes cannot hold a {tuple(shape)} sign tensor")
    bits = (packed.to(torch.int64).unsqueeze(1) & _BIT_WEIGHTS.to(packed.device)) != 0
    return bits.reshape(-1)[:n].reshape(tuple(shape))


def word_dtype(width: int) -> torch.dtype:
    """The narrowest integer dtype holding ``width`` bits without touching its sign bit."""
    for dtype, bits in ((torch.uint8, 8), (torch.int16, 15), (torch.int32, 31), (torch.int64, 63)):
        if width <= bits:
            return dtype
    raise ValueError(f"at most 63 bits per word, got {width}")


def pack_words(bits: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Pack the last axis (at most 63 booleans) of ``bits`` into one integer word: bit j = element j.

    The word dtype defaults to :func:`word_dtype` of the width (uint8 up to 8 bits, ..., int64 up to 63).
    """
    width = bits.shape[-1]
    dtype = dtype or word_dtype(width)
    weights = (1 << torch.arange(width, dtype=torch.int64, device=bits.device)).to(dtype)
    return (bits.to(dtype) * weights).sum(dim=-1, dtype=dtype)


_M1, _M2, _M4 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F


def popcount(words: Tensor, width: int | None = None) -> Tensor:
    """Number of set bits of non-negative integer words whose set bits lie in the low ``width`` bits.

    SWAR bit counting (pairs, nibbles, bytes, then byte sums) in the words' own dtype; steps beyond ``width``
    are skipped (a 1-bit word is its own count).
    """
    nbits = torch.iinfo(words.dtype).bits
    usable = nbits - (0 if words.dtype == torch.uint8 else 1)
    width = usable if width is None else width
    if width > usable:
        raise ValueError(f"{width}-bit words do not fit {words.dtype}")
    m1, m2, m4 = (m & ((1 << min(nbits, 63)) - 1) for m in (_M1, _M2, _M4))
    if width <= 1:
        return words
    x = words - ((words >> 1) & m1)
    if width <= 2:
        return x
    x = (x & m2) + ((x >> 2) & m2)
    if width <= 4:
        return x
    x = (x + (x >> 4)) & m4
    if width <= 8:
        return x
    for shift in (8, 16, 32):
        x = x + (x >> shift)
        if width <= 2 * shift:
            break
    return x & 0x7F
