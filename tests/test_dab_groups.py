"""``method.dab_groups``: DAB with one scale per group of input channels, against a direct formula."""

from __future__ import annotations

import pytest
import torch

from bindense.binary import DAB, BinaryConv2d
from bindense.binary import reference as ref
from bindense.binary.binarizers import dab_group_size
from bindense.models.spec import MethodSpec


def direct_grouped_dab(x, a, k, b, size, channels_last=False):
    """The grouped DAB written out group by group: alpha_g = exp(a_g (mean over group and space |s| - 1))."""
    cdim = -1 if channels_last else 1
    dims = tuple(range(1, x.dim() - 1)) if channels_last else tuple(range(2, x.dim()))
    s = x - (k * x.detach().mean(dim=dims, keepdim=True) + b)
    pieces = []
    channels = x.shape[cdim]
    for g, start in enumerate(range(0, channels, size)):
        part = s.narrow(cdim, start, min(size, channels - start))
        all_dims = tuple(d for d in range(1, x.dim()))
        stat = part.detach().abs().mean(dim=all_dims, keepdim=True)
        pieces.append(torch.exp(a.flatten()[g] * (stat - 1)) * ref.approx_sign(part))
    return torch.cat(pieces, dim=cdim)


def _random_dab(channels, groups, channels_last=False):
    torch.manual_seed(0)
    dab = DAB(channels, channels_last=channels_last, groups=groups)
    with torch.no_grad():  # scales far from 1 so that the grouping shows in the values
        dab.a.copy_(torch.randn_like(dab.a))
        dab.k.copy_(torch.randn_like(dab.k) * 0.5)
        dab.b.copy_(torch.randn_like(dab.b) * 0.3)
    return dab


@pytest.mark.parametrize("groups", [1, 3, "all"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_grouped_dab_values_and_gradients_match_direct_formula(groups, channels_last):
    channels = 8
    dab = _random_dab(channels, groups, channels_last)
    size = dab_group_size(groups, channels) or 1
    assert dab.a.numel() == -(-channels // size)
    shape = (2, 5, channels) if channels_last else (2, channels, 4, 5)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    dab = dab.double()
    grad_out = torch.randn(shape, dtype=torch.float64)

    out = dab(x)
    grads = torch.autograd.grad(out, (x, dab.a, dab.k, dab.b), grad_out)
    expected = direct_grouped_dab(x, dab.a, dab.k, dab.b, size, channels_last)
    expected_grads = torch.autograd.grad(expected, (x, dab.a, dab.k, dab.b), grad_out)

    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_grouped_alpha_is_constant_within_groups_and_last_group_is_smaller():
    dab = _random_dab(8, 3)
    x = torch.randn(2, 8, 4, 5)
    out = dab(x).abs().amax(dim=(2, 3))  # alpha per (sample, channel)
    for start, stop in [(0, 3), (3, 6), (6, 8)]:
        assert torch.allclose(out[:, start:stop], out[:, start : start + 1].expand(-1, stop - start))
    assert not torch.allclose(out[:, 0], out[:, 3])


def test_group_of_one_is_per_channel_dab_bit_for_bit():
    per_channel, one = _random_dab(8, None), _random_dab(8, 1)
    x = torch.randn(2, 8, 4, 5)
    assert torch.equal(per_channel(x), one(x))


def test_dab_groups_key_reaches_every_dab_unit_and_only_those():
    spec = MethodSpec.from_config({"layout": "bidense", "dab_groups": 64})
    unit = spec.conv(96, 96, 3, padding=1)
    assert isinstance(unit, BinaryConv2d) and unit.activation_binarizer.group_size == 64
    assert unit.activation_binarizer.a.numel() == 2
    assert spec.conv(8, 8, 1, binary=False).activation_binarizer.__class__.__name__ == "FullPrecision"
    default = MethodSpec.from_config({"layout": "bidense"}).conv(96, 96, 3)
    assert default.activation_binarizer.group_size is None and default.activation_binarizer.a.numel() == 96


@pytest.mark.parametrize("bad", [0, -2, "some", 1.5, True])
def test_bad_dab_groups_is_refused(bad):
    with pytest.raises(ValueError, match="method.dab_groups"):
        MethodSpec.from_config({"layout": "bidense", "dab_groups": bad})
