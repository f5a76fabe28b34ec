"""Scratch buffers of the fused unit, kept between calls (docs/TRAINING.md section 1, "Scratch buffers").

The binarized input and the binarized weight that a unit's native kernels write are scratch: one convolution reads
them and they are dropped (backward rebuilds them). glibc serves a block of 32 MiB or more with a fresh ``mmap``
(:data:`bindense.process.MMAP_THRESHOLD_MAX`, its largest threshold), so the kernel maps and zeroes every page of it
again at the first write, every call: a fresh 64 MiB buffer took 17 ms to fill on this project's machine, the same
buffer written again 1.3 ms. Smaller blocks come back from the heap, which keeps them (:mod:`bindense.process`).

:class:`Workspace` lends such large scratch buffers and takes them back, so a later call writes into pages already
mapped. It keeps only what is lent at the same time (one buffer per unit in backward, the input's and the weight's in
forward): when no idle buffer is large enough, the idle ones are dropped and one of the size asked for is made, so
the buffers held converge to the largest scratch sizes in use at once. What it holds is memory the process keeps
between steps (``held_bytes``; the benchmark counts it in the step's peak). ``BINDENSE_UNIT_WORKSPACE=0`` turns it
off (every buffer a fresh tensor, as before).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from bindense.process import MMAP_THRESHOLD_MAX

#: ``1`` (default): large scratch buffers are kept between calls; ``0``: every buffer is a fresh tensor
ENV_SWITCH = "BINDENSE_UNIT_WORKSPACE"


class Workspace:
    """Float32 scratch buffers of at least ``min_bytes``, lent (:meth:`take`) and taken back (:meth:`give`)."""

    def __init__(self, min_bytes: int = MMAP_THRESHOLD_MAX) -> None:
        self.min_bytes = min_bytes
        self._idle: list[Tensor] = []  # flat buffers
        self._lent: dict[int, Tensor] = {}  # data pointer -> flat buffer

    def take(self, like: Tensor) -> Tensor | None:
        """An uninitialised float32 CPU tensor of ``like``'s shape, or None where a fresh tensor is as cheap
        (below ``min_bytes``) or the tensor is not a float32 CPU one."""
        n = like.numel()
        if like.dtype != torch.float32 or like.device.type != "cpu" or 4 * n < self.min_bytes:
            return None
        fits = [i for i, b in enumerate(self._idle) if b.numel() >= n]
        if fits:
            flat = self._idle.pop(min(fits, key=lambda i: self._idle[i].numel()))
        else:
            self._idle.clear()
            flat = torch.empty(n, dtype=torch.float32)
        self._lent[flat.data_ptr()] = flat
        return flat[:n].view(like.shape)

    def give(self, buffer: Tensor | None) -> None:
        """Take back a buffer from :meth:`take` (None: nothing lent); its values are no longer needed."""
        if buffer is not None:
            self._idle.append(self._lent.pop(buffer.data_ptr()))

    @contextmanager
    def lend(self, like: Tensor | None) -> Iterator[Tensor | None]:
        """:meth:`take` for a ``with`` block, given back when it ends, also by an exception (``like=None``: lends
        nothing)."""
        buffer = None if like is None else self.take(like)
        try:
            yield buffer
        finally:
            self.give(buffer)

    def held_bytes(self) -> int:
        """Bytes of the buffers this workspace keeps (idle and lent)."""
        return 4 * sum(b.numel() for b in (*self._idle, *self._lent.values()))

    def clear(self) -> None:
        """Drop the idle buffers."""
        self._idle.clear()


class _PerThread(threading.local):
    workspace: Workspace | None = None


_LOCAL = _PerThread()


def scratch() -> Workspace:
    """This thread's workspace (with ``BINDENSE_UNIT_WORKSPACE=0``, one that lends nothing)."""
    if _LOCAL.workspace is None:
        mode = os.environ.get(ENV_SWITCH, "1").strip()
        if mode not in ("0", "1"):
            raise ValueError(f"{ENV_SWITCH}={mode!r}: expected 0 or 1")
        _LOCAL.workspace = Workspace(MMAP_THRESHOLD_MAX if mode == "1" else sys.maxsize)
    return _LOCAL.workspace
