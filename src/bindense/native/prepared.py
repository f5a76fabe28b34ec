"""Weights prepared once for the kernels: :class:`PreparedWeights`, the one copy a deployed binary conv keeps."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bindense.native import build

WORDS = "words"  #: layout name of the plain packed words [O, kh, kw, ceil(Cg/64)] (depthwise and torch paths)


def segment_length(in_channels: int, groups: int, channel_group_size: int | None) -> int:
    """Input channels per packed segment of a conv group (the kernels' layout depends on it): the DAB group size
    when it splits a conv group, else the whole conv group."""
    cg = in_channels // groups
    return channel_group_size if channel_group_size and channel_group_size < cg else cg


@dataclass(frozen=True, eq=False)
class PreparedWeights:
    """A binary conv's weights in the layout one ISA path reads, made by :func:`bindense.native.prepare_weights`.

    ``layout``: the ISA path (``avx512``, ``avx2``, ``generic``) whose blocked layout ``data`` holds (the packed
    words re-ordered into blocks of that path's output channels, zero words padding the last block; the AVX2
    kernel's nibble planes are made per call, not held), or ``"words"``: ``data`` is the packed words themselves
    (depthwise convs, whose kernel reads the words, and the pure-torch path). The tap popcounts the kernels need
    at the borders are recomputed at each call (one pass over the weights), so ``data`` is the only copy:
    :attr:`nbytes` is what the weights cost in memory.
    """

    layout: str
    data: torch.Tensor
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    groups: int
    channel_group_size: int | None

    @property
    def nbytes(self) -> int:
        """Bytes held (the layout tensor's storage)."""
        return self.data.untyped_storage().nbytes()

    @property
    def segment(self) -> int:
        return segment_length(self.in_channels, self.groups, self.channel_group_size)

    def words(self) -> torch.Tensor:
        """The packed words [O, kh, kw, ceil(Cg/64)] (the tensor itself for ``"words"``, else rebuilt from the
        layout: a new tensor)."""
        if self.layout == WORDS:
            return self.data
        return build.extension().unprepare_weights(self.data, self.out_channels, *self.kernel_size,
                                                   self.in_channels, self.groups, self.channel_group_size or 0,
                                                   self.layout)

    def check_call(self, in_channels: int, kernel_size: tuple[int, int], groups: int,
                   channel_group_size: int | None) -> None:
        """Raise a clear error unless a conv call has the geometry these weights were prepared for."""
        got = (in_channels, tuple(kernel_size), groups, segment_length(in_channels, groups, channel_group_size))
        want = (self.in_channels, self.kernel_size, self.groups, self.segment)
        if got != want:
            raise ValueError(
                f"bindense.native: weights prepared for in_channels={want[0]}, kernel_size={want[1]}, "
                f"groups={want[2]}, channel segments of {want[3]} (channel_group_size={self.channel_group_size}); "
                f"this call has in_channels={got[0]}, kernel_size={got[1]}, groups={got[2]}, channel_group_size="
                f"{channel_group_size}: call prepare_weights with the conv's own arguments"
            )
