"""The channel-adaptive full-precision bypass (CFB) of a binary unit, and its add to the unit's output.

:func:`cfb` is the formula (docs/METHODS.md#13-cfb-bypass). :func:`cfb_add_` computes ``y + cfb(x)`` in ``y``'s buffer
as one autograd node: the tiled copies of ``x`` are added straight into ``y`` (no repeated tensor, no new output), and
its backward writes
the gradient of ``x`` directly (the sum over the tiles, the merged channels' gradient spread over their inputs)
instead of zero-filling one full-size buffer per channel slice and adding them, as autograd does for the
composition. Values and gradients are the composition's (same float operations; tests/test_binary_kernels.py).
"""

from __future__ import annotations

import torch
from torch import Tensor


def cfb(x: Tensor, out_channels: int) -> Tensor:
    """Channel-adaptive full-precision bypass (docs/METHODS.md#13-cfb-bypass), parameter-free, on ``(B, C_in, ...)``.

    With ``out_channels = r * C_in + m``: ``r`` tiled copies of ``x``, then ``m`` merged channels, where for
    ``G = C_in // m`` merged channel ``j < m - 1`` is the mean over ``g < G`` of ``x[:, g * (m - 1) + j]`` and
    the last one is the mean of all remaining channels (for ``m = 1``: the mean of every channel).
    """
    in_channels = x.shape[1]
    if out_channels == in_channels:
        return x
    if out_channels < 1:
        raise ValueError(f"cfb: out_channels must be >= 1, got {out_channels}")
    r, m = divmod(out_channels, in_channels)
    parts = [x.repeat(1, r, *([1] * (x.dim() - 2)))] if r else []
    if m:
        parts.append(_merged(x, m))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def _merged(x: Tensor, m: int) -> Tensor:
    """The ``m`` merged channels of :func:`cfb`."""
    groups = x.shape[1] // m
    strided = groups * (m - 1)
    last = x[:, strided:].mean(dim=1, keepdim=True)
    if m == 1:
        return last
    return torch.cat([x[:, :strided].unflatten(1, (groups, m - 1)).mean(dim=1), last], dim=1)


def _tiles(t: Tensor, r: int, channels: int) -> Tensor:
    """The first ``r * channels`` channels of ``t`` as ``(B, r, channels, ...)`` (a view)."""
    return t[:, : r * channels].unflatten(1, (r, channels))


class CFBAdd(torch.autograd.Function):
    """``y += cfb(x, y.shape[1])`` in place for ``y.shape[1] != x.shape[1]``, with a direct backward."""

    @staticmethod
    def forward(ctx, y: Tensor, x: Tensor) -> Tensor:
        in_channels, out_channels = x.shape[1], y.shape[1]
        ctx.x_shape, ctx.x_format = x.shape, _memory_format(x)
        ctx.mark_dirty(y)
        r, m = divmod(out_channels, in_channels)
        if r:
            _tiles(y, r, in_channels).add_(x.unsqueeze(1))
        if m:
            y[:, r * in_channels :].add_(_merged(x, m))
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None]:
        if not ctx.needs_input_grad[1]:
            return grad, None
        in_channels = ctx.x_shape[1]
        r, m = divmod(grad.shape[1], in_channels)
        if r:  # RepeatBackward's sum over the tiles
            grad_x = _tiles(grad, r, in_channels).sum(dim=1)
        else:
            grad_x = grad.new_empty(ctx.x_shape).contiguous(memory_format=ctx.x_format)
        if m:  # MeanBackward: each merged channel's gradient / its count, to each of its input channels
            merged = grad[:, r * in_channels :]
            groups = in_channels // m
            strided = groups * (m - 1)
            spread = [(grad_x[:, strided:], merged[:, m - 1 :] / (in_channels - strided))]
            if m > 1:
                grid = grad_x[:, :strided].unflatten(1, (groups, m - 1))
                spread.append((grid, (merged[:, : m - 1] / groups)[:, None]))
            for target, value in spread:
                if r:
                    target.add_(value)
                else:
                    target.copy_(value)
        return grad, grad_x


def _memory_format(t: Tensor) -> torch.memory_format:
    """NHWC for a 4-d tensor laid out so (and not also NCHW-contiguous), else NCHW."""
    nhwc = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if nhwc else torch.contiguous_format


def cfb_add_(y: Tensor, x: Tensor) -> Tensor:
    """``y + cfb(x, y.shape[1])``, written into ``y`` (:class:`CFBAdd` where the channel counts differ).

    For a unit's fresh output (its norm's or its convolution's, which no backward reads): one pass over ``y`` and
    no new tensor. Values and gradients are those of ``y + cfb(x)``.
    """
    if y.shape[1] == x.shape[1]:
        return y.add_(x)
    if y.shape[1] < 1:
        raise ValueError(f"cfb: out_channels must be >= 1, got {y.shape[1]}")
    return CFBAdd.apply(y, x)
