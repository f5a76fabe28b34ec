"""The fused unit's scratch workspace (bindense.binary.workspace): lending, reuse, and the same bits either way."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from binary_units import perturbed, run_unit

from bindense import native
from bindense.binary import BinaryConv2d
from bindense.binary import workspace as W

NATIVE = [name for name in native.supported_isas() if name != "torch"]


def test_small_or_non_float_buffers_are_not_lent() -> None:
    ws = W.Workspace(min_bytes=4 * 100)
    assert ws.take(torch.empty(99)) is None
    assert ws.take(torch.empty(100, dtype=torch.float64)) is None
    assert ws.held_bytes() == 0


def test_buffers_are_reused_and_converge_to_the_largest() -> None:
    ws = W.Workspace(min_bytes=0)
    a = ws.take(torch.empty(2, 3, 4))
    b = ws.take(torch.empty(5))  # lent at the same time: another buffer
    assert a.shape == (2, 3, 4) and b.shape == (5,) and a.data_ptr() != b.data_ptr()
    ptr = a.data_ptr()
    ws.give(a)
    ws.give(b)
    again = ws.take(torch.empty(20))  # the smallest idle buffer that fits (24 elements)
    assert again.data_ptr() == ptr and again.shape == (20,)
    ws.give(again)
    assert ws.held_bytes() == 4 * (24 + 5)
    big = ws.take(torch.empty(7, 8))  # none fits: the idle buffers are dropped for one of 56
    assert ws.held_bytes() == 4 * 56
    ws.give(big)
    ws.give(None)
    assert ws.take(torch.empty(56)).data_ptr() == big.data_ptr()


def test_lend_gives_back_also_when_the_block_raises() -> None:
    ws = W.Workspace(min_bytes=400)
    with pytest.raises(RuntimeError), ws.lend(torch.empty(100)) as buffer:
        raise RuntimeError("the convolution failed")
    assert ws.take(torch.empty(100)).data_ptr() == buffer.data_ptr()  # idle again, not stranded as lent
    with ws.lend(None) as nothing:
        assert nothing is None


def test_switch_off_lends_nothing(monkeypatch) -> None:
    monkeypatch.setattr(W, "_LOCAL", W._PerThread())
    monkeypatch.setenv(W.ENV_SWITCH, "0")
    assert W.scratch().take(torch.empty(1 << 24)) is None
    monkeypatch.setattr(W, "_LOCAL", W._PerThread())
    monkeypatch.setenv(W.ENV_SWITCH, "yes")
    with pytest.raises(ValueError, match="BINDENSE_UNIT_WORKSPACE"):
        W.scratch()


@pytest.mark.skipif(not NATIVE, reason="no native build")
def test_lent_buffers_give_the_same_bits(monkeypatch) -> None:
    """A unit whose every scratch buffer is lent (two steps, so the second reuses the first's buffers) computes
    the values and gradients of one without a workspace, bit for bit, in training and in evaluation."""
    unit = perturbed(BinaryConv2d(6, 10, 3, padding=1))
    x = torch.randn(2, 6, 9, 9, generator=torch.Generator().manual_seed(3))

    def run(workspace: W.Workspace) -> list[torch.Tensor]:
        local = W._PerThread()
        local.workspace = workspace
        monkeypatch.setattr(W, "_LOCAL", local)
        out = []
        for _ in range(2):
            got, grad_x, grads = run_unit(copy.deepcopy(unit), x)
            out += [got, grad_x, *grads.values()]
        with torch.no_grad():
            out.append(copy.deepcopy(unit).eval()(x))
        return out

    lending = W.Workspace(min_bytes=0)
    for a, b in zip(run(lending), run(W.Workspace(min_bytes=sys.maxsize))):
        assert torch.equal(a, b)
    assert lending.held_bytes() > 0 and not lending._lent  # every buffer lent came back


@pytest.mark.skipif(not NATIVE, reason="no native build")
def test_kernels_write_into_the_buffer_given() -> None:
    from bindense.binary import kernels as K

    isa = NATIVE[0]
    x, w = torch.randn(2, 3, 4, 5), torch.randn(6, 3, 3, 3)
    a = k = b = torch.zeros(3)
    xb_out, wb_out = torch.empty_like(x), torch.empty_like(w)
    xb, _, _, alpha, thr = K.dab_forward(x, a, k, b, isa, xb_out)
    wb, scale, _ = K.weight_forward(w, True, isa, wb_out)
    assert xb.data_ptr() == xb_out.data_ptr() and wb.data_ptr() == wb_out.data_ptr()
    assert K.weight_rebuild(w, scale, isa, torch.empty_like(w)).data_ptr() != wb.data_ptr()
    again = torch.empty_like(x)
    assert K.dab_backward(x, thr, torch.randn_like(x), alpha, isa, True, again)[3].data_ptr() == again.data_ptr()
    with pytest.raises(RuntimeError, match="out must have the shape"):
        K.dab_forward(x, a, k, b, isa, torch.empty(2, 3, 4, 4))
