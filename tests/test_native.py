"""bindense.native: packing conventions, every conv case against float convs of +-1 tensors, on every ISA path
this CPU runs (plus the pure-torch oracle), and clear errors for bad input."""

import os

import pytest
import torch
import torch.nn.functional as F

from bindense import native
from bindense.native import reference

ISAS = sorted(set(native.supported_isas()) | {"torch"}, key=native.ISAS.index)


def sgn(t: torch.Tensor) -> torch.Tensor:
    """The project's sign: +1 where >= 0 (sign(0) = +1), -1 elsewhere."""
    return torch.where(t >= 0, 1.0, -1.0)


@pytest.fixture(params=ISAS)
def isa(request):
    native.set_isa(request.param)
    yield request.param
    native.set_isa(None)


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    x[x.abs() < 0.05] = 0.0  # exact zeros: they must count as +1
    return x


def test_pack_bit_convention():
    x = torch.zeros(1, 70, 1, 1)
    x[0, 1] = -1.0
    x[0, 65] = -0.5
    bits = native.pack_activations(x)
    assert bits.shape == (1, 1, 1, 2) and bits.dtype == torch.int64
    assert bits[0, 0, 0, 0].item() == ~(1 << 1)  # all 64 channels set except channel 1
    assert bits[0, 0, 0, 1].item() == 0b111101  # channels 64..69; channel 65 clear, bits 70..127 zero
    assert torch.equal(native.unpack_activations(bits, 70), sgn(x))


@pytest.mark.parametrize("c", [1, 63, 64, 65, 200])
def test_pack_roundtrip_and_threshold(isa, c):
    x, thr = rand(2, c, 3, 5, seed=c), rand(2, c, seed=1)
    assert torch.equal(native.unpack_activations(native.pack_activations(x), c), sgn(x))
    for t in (thr, thr[0]):
        tt = t if t.dim() == 2 else t.expand(2, c)
        want = sgn(x - tt[:, :, None, None])
        assert torch.equal(native.unpack_activations(native.pack_activations(x, t), c), want)
    w = rand(7, c, 3, 2, seed=2)
    assert torch.equal(native.unpack_weights(native.pack_weights(w), c), sgn(w))


# (N, C, O, H, W, k, stride, padding, groups)
CONV_CASES = [
    (1, 64, 64, 9, 8, 3, 1, 1, 1),  # 3x3 s1 p1
    (2, 100, 40, 11, 13, 3, 2, 1, 1),  # 3x3 s2, channels not a multiple of 64
    (1, 130, 33, 7, 9, 1, 1, 0, 1),  # 1x1
    (1, 256, 72, 8, 10, 2, 2, 0, 1),  # 2x2/2 transition
    (2, 48, 48, 10, 9, 7, 1, 3, 48),  # depthwise 7x7
    (1, 70, 70, 15, 14, 13, 2, 6, 70),  # depthwise 13x13 stride 2: 169 taps (int8 sums in chunks of 127)
    (1, 96, 64, 6, 7, 3, 1, 1, 4),  # grouped, 24 channels per group
    (1, 256, 128, 6, 6, 3, 1, 1, 2),  # grouped, 128 channels per group (word aligned)
    (1, 5, 3, 4, 4, 3, 1, 2, 1),  # padding 2 > needed, tiny channels
    (1, 70, 20, 5, 6, (3, 1), (2, 1), (1, 0), 1),  # non-square kernel/stride/padding
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv_matches_float_conv_of_signs(isa, case):
    n, c, o, h, w, k, s, p, g = case
    x, wt = rand(n, c, h, w, seed=1), rand(o, c // g, *((k, k) if isinstance(k, int) else k), seed=2)
    y = native.binary_conv2d(native.pack_activations(x), native.pack_weights(wt), c, wt.shape[2:], s, p, g)
    want = F.conv2d(sgn(x), sgn(wt), stride=s, padding=p, groups=g)
    assert torch.equal(y, want)  # integer sums: exact


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("case", CONV_CASES[:6], ids=[str(i) for i in range(6)])
def test_conv_epilogue(isa, case, relu):
    """Scale, bias, residual and (``relu=True``: the ReLU after a unit) fused into the epilogue, on every path."""
    n, c, o, h, w, k, s, p, g = case
    x, wt = rand(n, c, h, w, seed=3), rand(o, c // g, k, k, seed=4)
    scale, bias = rand(o, seed=5), rand(o, seed=6)
    base = F.conv2d(sgn(x), sgn(wt), stride=s, padding=p, groups=g)
    res = rand(*base.shape, seed=7)
    y = native.binary_conv2d(native.pack_activations(x), native.pack_weights(wt), c, k, s, p, g,
                             out_scale=scale, out_bias=bias, residual=res, relu=relu)
    want = base * scale[None, :, None, None] + bias[None, :, None, None] + res
    if relu:
        want = want.clamp_min(0)
        assert (want == 0).any() and (want > 0).any()
    torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    "c,o,k,s,p,groups,gsize",
    [(256, 64, 3, 1, 1, 1, 64), (200, 40, 3, 2, 1, 1, 48), (130, 16, 1, 1, 0, 1, 130), (96, 32, 3, 1, 1, 1, 1),
     (48, 48, 7, 1, 3, 48, 1), (64, 32, 3, 1, 1, 4, 8), (64, 32, 3, 1, 1, 4, 32)],
)
def test_conv_channel_groups(isa, c, o, k, s, p, groups, gsize):
    """DAB groups: S = sum_k group_scale[n, k] * S_k over groups of gsize consecutive input channels."""
    n = 2
    x, wt = rand(n, c, 9, 8, seed=8), rand(o, c // groups, k, k, seed=9)
    ng = (c + gsize - 1) // gsize
    gs = rand(n, ng, seed=10).abs() + 0.1
    alpha = gs[:, torch.arange(c) // gsize]
    want = F.conv2d(sgn(x) * alpha[:, :, None, None], sgn(wt), stride=s, padding=p, groups=groups)
    y = native.binary_conv2d(native.pack_activations(x), native.pack_weights(wt), c, k, s, p, groups,
                             channel_group_size=gsize, group_scale=gs)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("c,o,k,p", [(64, 32, 2, 0), (100, 24, 4, 0), (70, 8, 2, 1)])
def test_conv_transpose(isa, c, o, k, p):
    x, wt = rand(2, c, 5, 6, seed=11), rand(c, o, k, k, seed=12)
    scale, bias = rand(o, seed=13), rand(o, seed=14)
    base = F.conv_transpose2d(sgn(x), sgn(wt), stride=k, padding=p)
    res = rand(*base.shape, seed=15)
    wb = native.pack_weights(wt.permute(1, 0, 2, 3))
    y = native.binary_conv_transpose2d(native.pack_activations(x), wb, c, k, k, p)
    assert torch.equal(y, base)
    y = native.binary_conv_transpose2d(native.pack_activations(x), wb, c, k, k, p, scale, bias, res)
    torch.testing.assert_close(y, base * scale[None, :, None, None] + bias[None, :, None, None] + res)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[4]], ids=["dense", "depthwise"])
def test_conv_into_out_buffer(isa, case):
    n, c, o, h, w, k, s, p, g = case
    x, wt = rand(n, c, h, w, seed=30), rand(o, c // g, k, k, seed=31)
    xb, wb = native.pack_activations(x), native.pack_weights(wt)
    want = F.conv2d(sgn(x), sgn(wt), stride=s, padding=p, groups=g)
    out = torch.full_like(want, 7.0)
    y = native.binary_conv2d(xb, wb, c, k, s, p, g, out=out)
    assert y.data_ptr() == out.data_ptr() and torch.equal(out, want)
    with pytest.raises(ValueError, match=r"out must have shape"):
        native.binary_conv2d(xb, wb, c, k, s, p, g, out=torch.empty(1, 1, 1, 1))


def test_random_shapes_all_isas_agree():
    """Random shapes: every native path equals the oracle exactly."""
    g = torch.Generator().manual_seed(0)
    for trial in range(12):
        c, o = (int(v) for v in torch.randint(1, 300, (2,), generator=g))
        k = int(torch.randint(1, 4, (1,), generator=g))
        s = int(torch.randint(1, 3, (1,), generator=g))
        p = int(torch.randint(0, k, (1,), generator=g))
        h, w = (int(v) for v in torch.randint(k, 12, (2,), generator=g))
        x, wt = rand(2, c, h, w, seed=trial), rand(o, c, k, k, seed=100 + trial)
        xb, wb = native.pack_activations(x), native.pack_weights(wt)
        want = F.conv2d(sgn(x), sgn(wt), stride=s, padding=p)
        for name in ISAS:
            native.set_isa(name)
            try:
                assert torch.equal(native.binary_conv2d(xb, wb, c, k, s, p), want), (name, c, o, k, s, p, h, w)
            finally:
                native.set_isa(None)


def test_errors_name_what_was_expected():
    x = native.pack_activations(rand(1, 70, 5, 5))
    w = native.pack_weights(rand(8, 70, 3, 3))
    with pytest.raises(ValueError, match=r"x_bits must have shape \[1, 5, 5, 1\]"):
        native.binary_conv2d(x, w, 64, 3, 1, 1)  # wrong channel count
    with pytest.raises(TypeError, match="x_bits must be torch.int64"):
        native.binary_conv2d(x.to(torch.int32), w, 70, 3, 1, 1)
    with pytest.raises(ValueError, match="must be contiguous"):
        native.binary_conv2d(x.permute(0, 2, 1, 3), w, 70, 3, 1, 1)
    with pytest.raises(ValueError, match=r"w_bits must have shape \[8, 1, 1, 2\]"):
        native.binary_conv2d(x, w, 70, 1, 1, 0)  # kernel size not matching the weights
    with pytest.raises(ValueError, match=r"out_scale must have shape \[8\]"):
        native.binary_conv2d(x, w, 70, 3, 1, 1, out_scale=torch.ones(7))
    with pytest.raises(ValueError, match=r"group_scale must have shape \[1, 2\]"):
        native.binary_conv2d(x, w, 70, 3, 1, 1, channel_group_size=64, group_scale=torch.ones(1, 3))
    with pytest.raises(ValueError, match="kernel_size == stride"):
        native.binary_conv_transpose2d(x, w, 70, 3, 1)
    with pytest.raises(ValueError, match="x must be a float32 tensor"):
        native.pack_activations(rand(1, 70, 5, 5).double())
    with pytest.raises(ValueError, match="not an ISA path"):
        native.set_isa("sse9")


def test_prepared_bytes_counts_the_cached_layout():
    x, w = native.pack_activations(rand(1, 70, 5, 5)), native.pack_weights(rand(8, 70, 3, 3))
    assert native.prepared_bytes(w) == 0
    native.binary_conv2d(x, w, 70, 3, 1, 1)
    if native.isa() == "torch":
        assert native.prepared_bytes(w) == 0
    else:  # at least the weight words (output channels padded to the ISA's block) and the tap popcounts
        assert native.prepared_bytes(w) >= w.numel() * 8 + 8 * 9 * 4


# (C, O, k, stride, padding, groups, channel_group_size): dense, odd channels, DAB segments, grouped, depthwise
PREPARED_CASES = [(64, 64, 3, 1, 1, 1, None), (100, 40, 3, 2, 1, 1, None), (130, 33, 1, 1, 0, 1, 48),
                  (256, 72, 3, 1, 1, 1, 64), (96, 64, 3, 1, 1, 4, None), (64, 32, 3, 1, 1, 4, 8),
                  (48, 48, 7, 1, 3, 48, 1)]  # fmt: skip


@pytest.mark.parametrize("case", PREPARED_CASES, ids=[str(i) for i in range(len(PREPARED_CASES))])
def test_prepared_weights_equal_w_bits(isa, case):
    """prepare_weights' layout gives the same outputs as the packed words, holds one copy, caches nothing."""
    c, o, k, s, p, g, gsize = case
    x, wt = rand(2, c, 9, 8, seed=40), rand(o, c // g, k, k, seed=41)
    xb, wb = native.pack_activations(x), native.pack_weights(wt)
    gs = rand(2, -(-c // gsize), seed=42).abs() + 0.1 if gsize else None
    epi = dict(channel_group_size=gsize, group_scale=gs, out_scale=rand(o, seed=43), out_bias=rand(o, seed=44))
    prepared = native.prepare_weights(wb.clone(), c, k, g, gsize)
    assert prepared.layout == ("words" if isa == "torch" or g == c == o else isa)
    assert torch.equal(prepared.words(), wb) and prepared.nbytes == prepared.data.untyped_storage().nbytes()
    cached = len(native._WEIGHT_CACHE)
    y = native.binary_conv2d(xb, prepared, c, k, s, p, g, **epi)
    assert len(native._WEIGHT_CACHE) == cached  # the prepared layout is the only copy
    assert torch.equal(y, native.binary_conv2d(xb, wb, c, k, s, p, g, **epi))


def test_prepared_layout_holds_just_the_words(isa):
    """Every path's prepared layout is the packed words re-ordered (no second copy such as AVX2's nibble planes,
    which its kernel makes per call): with O a multiple of every ISA's block, exactly the bytes of w_bits."""
    c, o = 130, 64
    wb = native.pack_weights(rand(o, c, 3, 3, seed=48))
    prepared = native.prepare_weights(wb, c, 3)
    assert prepared.nbytes == wb.numel() * 8
    assert torch.equal(prepared.words(), wb)


@pytest.mark.parametrize("c, k, h, w", [(500, 3, 7, 9), (64, 7, 9, 10), (1000, 1, 5, 6), (2048, 3, 4, 7)])
def test_many_words_per_output(isa, c, k, h, w):
    """Sums over more words than one byte counter of the AVX2 kernel holds (31: flushed in runs), over several
    runs and a remainder, with row tails of 1-3 pixels (its tiles are 4 pixels): exact on every path."""
    x, wt = rand(1, c, h, w, seed=49), rand(24, c, k, k, seed=50)
    xb, wb = native.pack_activations(x), native.pack_weights(wt)
    want = F.conv2d(sgn(x), sgn(wt), padding=k // 2)
    assert torch.equal(native.binary_conv2d(xb, wb, c, k, 1, k // 2), want)
    assert torch.equal(native.binary_conv2d(xb, native.prepare_weights(wb, c, k), c, k, 1, k // 2), want)


def test_prepared_weights_on_another_isa_and_bad_calls():
    c, o = 130, 40
    xb, wb = native.pack_activations(rand(1, c, 6, 7, seed=45)), native.pack_weights(rand(o, c, 3, 3, seed=46))
    gs = rand(1, 3, seed=47).abs()
    for prepared_on in ISAS:
        native.set_isa(prepared_on)
        try:
            prepared = native.prepare_weights(wb, c, 3, channel_group_size=64)
            for run_on in ISAS:  # a layout for one path still runs (re-laid out per call) on every other
                native.set_isa(run_on)
                want = native.binary_conv2d(xb, wb, c, 3, 1, 1, channel_group_size=64, group_scale=gs)
                got = native.binary_conv2d(xb, prepared, c, 3, 1, 1, channel_group_size=64, group_scale=gs)
                assert torch.equal(got, want), (prepared_on, run_on)
        finally:
            native.set_isa(None)
    prepared = native.prepare_weights(wb, c, 3, channel_group_size=64)
    with pytest.raises(ValueError, match=r"prepared for in_channels=130, kernel_size=\(3, 3\).*this call has "
                                         r"in_channels=130, kernel_size=\(1, 1\)"):
        native.binary_conv2d(xb, prepared, c, 1, 1, 0, channel_group_size=64, group_scale=gs)
    with pytest.raises(ValueError, match="channel segments of 64"):
        native.binary_conv2d(xb, prepared, c, 3, 1, 1)
    with pytest.raises(ValueError, match=r"w_bits must have shape \[40, 1, 1, 3\]"):
        native.prepare_weights(wb, c, 1)


def test_reference_pack_matches_native_pack():
    x, t = rand(3, 130, 4, 7, seed=20), rand(3, 130, seed=21)
    assert torch.equal(native.pack_activations(x, t), reference.pack_activations(x, t))


@pytest.mark.skipif(os.environ.get("BINDENSE_REQUIRE_NATIVE", "0") in ("", "0"),
                    reason="only where BINDENSE_REQUIRE_NATIVE=1 (CI)")
def test_native_build_required():
    """CI sets BINDENSE_REQUIRE_NATIVE=1: the C++ extension must build and load there."""
    assert native.available()
    assert native.isa() in ("avx512", "avx2", "generic")


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    """No compiler: one RuntimeWarning, the pure-torch path; with BINDENSE_REQUIRE_NATIVE=1 an error instead."""
    from bindense.native import build

    def broken(verbose):
        raise OSError("no g++ here")

    monkeypatch.setattr(build, "_compile", broken)
    monkeypatch.setattr(build, "_state", {})
    monkeypatch.setenv("BINDENSE_REQUIRE_NATIVE", "1")
    with pytest.raises(RuntimeError, match="BINDENSE_REQUIRE_NATIVE=1"):
        native.available()
    monkeypatch.setenv("BINDENSE_REQUIRE_NATIVE", "0")
    monkeypatch.setattr(build, "_state", {})
    with pytest.warns(RuntimeWarning, match="no g\\+\\+ here"):
        assert not native.available()
    assert native.isa() == "torch" and native.supported_isas() == ["torch"]
    x, w = rand(1, 70, 5, 5), rand(8, 70, 3, 3)
    y = native.binary_conv2d(native.pack_activations(x), native.pack_weights(w), 70, 3, 1, 1)
    assert torch.equal(y, F.conv2d(sgn(x), sgn(w), padding=1))


def test_two_threads_same_result(isa):
    """Output rows are shared out dynamically between threads: same exact result as one thread."""
    x, wt = rand(2, 130, 9, 11, seed=40), rand(70, 130, 3, 3, seed=41)
    xd, wd = rand(2, 64, 9, 11, seed=42), rand(64, 1, 7, 7, seed=43)
    xb, wb, xdb, wdb = (native.pack_activations(x), native.pack_weights(wt), native.pack_activations(xd),
                        native.pack_weights(wd))
    torch.set_num_threads(2)  # the autouse fixture restores the thread count
    assert torch.equal(native.binary_conv2d(xb, wb, 130, 3, 1, 1), F.conv2d(sgn(x), sgn(wt), padding=1))
    want = F.conv2d(sgn(xd), sgn(wd), padding=3, groups=64)
    assert torch.equal(native.binary_conv2d(xdb, wdb, 64, 7, 1, 3, 64), want)


# (N, C, H, W, k, stride, padding)
SIGN_DW_CASES = [(2, 48, 10, 9, 7, 1, 3), (1, 70, 15, 14, 13, 2, 6), (1, 5, 4, 6, 5, 1, 1), (3, 1, 1, 1, 1, 1, 0),
                 (1, 9, 8, 11, (3, 5), (2, 1), (1, 2))]


@pytest.mark.parametrize("case", SIGN_DW_CASES, ids=[str(i) for i in range(len(SIGN_DW_CASES))])
def test_sign_depthwise_matches_float_conv(isa, case):
    """The float-input depthwise kernel: sign(x - threshold) conv +-1 weights, DAB scale, epilogue."""
    n, c, h, w, k, s, p = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x, thr = rand(n, c, h, w, seed=11), rand(n, c, seed=12) * 0.3
    wt = rand(c, 1, kh, kw, seed=13)
    signs = sgn(wt).to(torch.int8)
    base = F.conv2d(sgn(x - thr[:, :, None, None]), sgn(wt), stride=s, padding=p, groups=c)
    y, scale = native.sign_depthwise_conv2d(x, signs, (kh, kw), s, p, threshold=thr)
    assert torch.equal(y, base) and torch.equal(scale, torch.ones(n, c))  # integer sums: exact
    y, _ = native.sign_depthwise_conv2d(x, wt >= 0, (kh, kw), s, p, threshold=thr[0])  # bool weights, [C] threshold
    assert torch.equal(y, F.conv2d(sgn(x - thr[0, :, None, None]), sgn(wt), stride=s, padding=p, groups=c))
    a, os_, ob = rand(c, seed=14), rand(c, seed=15), rand(c, seed=16)
    res = rand(*base.shape, seed=17)
    sums = torch.empty(n, c, dtype=torch.float64)
    y, scale = native.sign_depthwise_conv2d(x, signs, (kh, kw), s, p, threshold=thr, dab_a=a, out_scale=os_,
                                            out_bias=ob, residual=res, relu=True, channel_sums=sums)
    torch.testing.assert_close(sums, y.double().sum(dim=(2, 3)), rtol=1e-6, atol=1e-6)  # the next DAB's mean
    alpha = torch.exp(a * ((x - thr[:, :, None, None]).abs().mean(dim=(2, 3)) - 1.0))
    torch.testing.assert_close(scale, alpha, rtol=1e-6, atol=0)
    want = (base * alpha[:, :, None, None] * os_[None, :, None, None] + ob[None, :, None, None] + res).clamp_min(0)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    given = rand(n, c, seed=18).abs()  # a given scale per plane (grouped DAB)
    y, scale = native.sign_depthwise_conv2d(x, signs, (kh, kw), s, p, threshold=thr, channel_scale=given)
    assert torch.equal(scale, given)
    torch.testing.assert_close(y, base * given[:, :, None, None], rtol=1e-5, atol=1e-5)


def test_sign_depthwise_random_shapes_all_isas_agree():
    g = torch.Generator().manual_seed(1)
    for trial in range(10):
        c = int(torch.randint(1, 150, (1,), generator=g))
        k = int(torch.randint(1, 8, (1,), generator=g))
        s, p = int(torch.randint(1, 3, (1,), generator=g)), int(torch.randint(0, k, (1,), generator=g))
        h, w = (int(v) for v in torch.randint(k, 40, (2,), generator=g))
        x, wt, thr = rand(2, c, h, w, seed=trial), rand(c, 1, k, k, seed=50 + trial), rand(2, c, seed=70 + trial)
        want = F.conv2d(sgn(x - thr[:, :, None, None]), sgn(wt), stride=s, padding=p, groups=c)
        for name in ISAS:
            native.set_isa(name)
            try:
                y, _ = native.sign_depthwise_conv2d(x, sgn(wt).to(torch.int8), k, s, p, threshold=thr)
                assert torch.equal(y, want), (name, c, k, s, p, h, w)
            finally:
                native.set_isa(None)


def test_sign_depthwise_errors():
    x = rand(1, 4, 5, 5)
    with pytest.raises(ValueError, match="x must be a float32 tensor"):
        native.sign_depthwise_conv2d(x.double(), torch.ones(4, 1, 3, 3, dtype=torch.int8), 3)
    with pytest.raises(ValueError, match="w_signs must be int8"):
        native.sign_depthwise_conv2d(x, torch.ones(5, 1, 3, 3, dtype=torch.int8), 3)
    with pytest.raises(ValueError, match="threshold must be float32"):
        native.sign_depthwise_conv2d(x, torch.ones(4, 1, 3, 3, dtype=torch.int8), 3, threshold=torch.zeros(3))
    with pytest.raises(ValueError, match="dab_a must have 4"):
        native.sign_depthwise_conv2d(x, torch.ones(4, 1, 3, 3, dtype=torch.int8), 3, dab_a=torch.zeros(3))


@pytest.mark.parametrize("c", [1, 64, 130])
def test_pack_activations_stats(isa, c):
    """DAB's statistic from the packing pass: sum |x - threshold| per (sample, channel), same bits as packing."""
    x, thr = rand(2, c, 7, 37, seed=c), rand(2, c, seed=2)
    bits, sums = native.pack_activations_stats(x, thr)
    assert torch.equal(bits, native.pack_activations(x, thr))
    torch.testing.assert_close(sums, (x - thr[:, :, None, None]).abs().sum(dim=(2, 3)), rtol=1e-5, atol=1e-5)
    _, sums = native.pack_activations_stats(x)
    torch.testing.assert_close(sums, x.abs().sum(dim=(2, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[2], CONV_CASES[6]], ids=["3x3", "1x1", "grouped"])
def test_conv_residual_tiled_over_outputs(isa, case):
    """A residual with O/r channels is added tiled r times (CFB's repeat), equal to adding the repeated tensor."""
    n, c, o, h, w, k, s, p, g = case
    x, wt = rand(n, c, h, w, seed=8), rand(o, c // g, k, k, seed=9)
    base = F.conv2d(sgn(x), sgn(wt), stride=s, padding=p, groups=g)
    for r in (d for d in (1, 2, 4, o) if o % d == 0):
        res = rand(n, o // r, *base.shape[2:], seed=10 + r)
        y = native.binary_conv2d(native.pack_activations(x), native.pack_weights(wt), c, k, s, p, g, residual=res)
        torch.testing.assert_close(y, base + res.repeat(1, r, 1, 1), rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="residual must have shape"):
        native.binary_conv2d(native.pack_activations(x), native.pack_weights(wt), c, k, s, p, g,
                             residual=rand(n, o, base.shape[2] + 1, base.shape[3]))


@pytest.mark.parametrize("cr,o", [(40, 10), (7, 3), (5, 12), (9, 1), (384, 96)])
def test_conv_residual_cfb_merge(isa, cr, o):
    """A residual with more channels than outputs (or not dividing them) is added as CFB's cfb(residual, O):
    tiled copies, then merged channels (means of residual channels), without materialising it."""
    from bindense.binary import cfb

    c, k = 70, 3
    x, wt = rand(2, c, 9, 13, seed=cr), rand(o, c, k, k, seed=o)
    base = F.conv2d(sgn(x), sgn(wt), padding=1)
    res = rand(2, cr, 9, 13, seed=cr + o)
    y = native.binary_conv2d(native.pack_activations(x), native.pack_weights(wt), c, k, 1, 1, residual=res)
    torch.testing.assert_close(y, base + cfb(res, o), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("parts", ["bias_slope", "rprelu", "slope", "scalar_slope"])
def test_conv_prelu_epilogue_and_channel_sums(isa, parts):
    """The activation after a unit, fused: prelu(y + bias, slope) + bias_after, the same float ops as
    LearnableBias -> nn.PReLU -> LearnableBias; channel_sums receives the sum of every output plane."""
    n, c, o = 2, 130, 40
    x, wt = rand(n, c, 8, 21, seed=50), rand(o, c, 3, 3, seed=51)
    bias, slope, after = rand(o, seed=52), rand(o, seed=53).abs() * 0.3, rand(o, seed=54)
    prelu = {"bias_slope": (bias, slope, None), "rprelu": (bias, slope, after), "slope": (None, slope, None),
             "scalar_slope": (bias, slope[:1], None)}[parts]
    res = rand(n, o, 8, 21, seed=55)
    base = F.conv2d(sgn(x), sgn(wt), padding=1) * 0.5 + res
    want = base + prelu[0].view(1, -1, 1, 1) if prelu[0] is not None else base
    want = F.prelu(want, prelu[1])
    want = want + prelu[2].view(1, -1, 1, 1) if prelu[2] is not None else want
    assert (want < 0).any() and (want > 0).any()
    sums = torch.full((n, o), 7.0, dtype=torch.float64)
    y = native.binary_conv2d(native.pack_activations(x), native.pack_weights(wt), c, 3, 1, 1,
                             out_scale=torch.full((o,), 0.5), residual=res, prelu=prelu, channel_sums=sums)
    torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(sums, y.double().sum(dim=(2, 3)), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="prelu slope must have 40 elements"):
        native.binary_conv2d(native.pack_activations(x), native.pack_weights(wt), c, 3, 1, 1, prelu=(None, bias[:3],
                                                                                                      None))
    with pytest.raises(ValueError, match=r"channel_sums must be a contiguous float64 tensor \[2, 40\]"):
        native.binary_conv2d(native.pack_activations(x), native.pack_weights(wt), c, 3, 1, 1,
                             channel_sums=torch.zeros(2, 40))


def test_grouped_random_shapes_all_isas_agree():
    """DAB groups on random shapes (interior tiles and borders, 1x1 to 3x3, strides, group sizes that do and do
    not divide the channels): every native path equals the float conv of the scaled signs to float rounding."""
    g = torch.Generator().manual_seed(1)
    for trial in range(10):
        c, o = (int(v) for v in torch.randint(2, 300, (2,), generator=g))
        gsize = int(torch.randint(1, 140, (1,), generator=g))
        k = int(torch.randint(1, 4, (1,), generator=g))
        s = int(torch.randint(1, 3, (1,), generator=g))
        p = int(torch.randint(0, k, (1,), generator=g))
        h, w = int(torch.randint(k, 9, (1,), generator=g)), int(torch.randint(max(k, 9), 20, (1,), generator=g))
        x, wt = rand(2, c, h, w, seed=trial), rand(o, c, k, k, seed=50 + trial)
        gs = rand(2, (c + gsize - 1) // gsize, seed=90 + trial).abs() + 0.1
        alpha = gs[:, torch.arange(c) // gsize]
        want = F.conv2d(sgn(x) * alpha[:, :, None, None], sgn(wt), stride=s, padding=p)
        xb, wb = native.pack_activations(x), native.pack_weights(wt)
        for name in ISAS:
            native.set_isa(name)
            try:
                y = native.binary_conv2d(xb, wb, c, k, s, p, channel_group_size=gsize, group_scale=gs)
                torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()),
                                           msg=str((name, c, o, gsize, k, s, p, h, w)))
            finally:
                native.set_isa(None)


@pytest.mark.parametrize("c", [1, 64, 130])
def test_abs_sums(isa, c):
    x, thr = rand(2, c, 7, 37, seed=c), rand(2, c, seed=3)
    torch.testing.assert_close(native.abs_sums(x, thr), (x - thr[:, :, None, None]).abs().sum(dim=(2, 3)),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(native.abs_sums(x), x.abs().sum(dim=(2, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 70, 4, 33), (1, 1, 1, 1)])
def test_dab_dense_matches_dab_formula(isa, shape):
    """Per-channel DAB's output alpha * sign(x - threshold) (sign(0) = +1) and alpha, on every path."""
    n, c = shape[:2]
    x, thr, a = rand(*shape, seed=21), rand(n, c, seed=22), rand(c, seed=23)
    x[0, 0, 0, 0] = thr[0, 0]  # s == 0 exactly: +alpha
    y, alpha = native.dab_dense(x, thr, a)
    s = x - thr[:, :, None, None]
    want_alpha = torch.exp(a * (s.abs().mean(dim=(2, 3)) - 1.0))
    torch.testing.assert_close(alpha, want_alpha, rtol=1e-6, atol=0)
    assert torch.equal(y, sgn(s) * alpha[:, :, None, None])
    assert y[0, 0, 0, 0] == alpha[0, 0]


@pytest.mark.parametrize("cr", [40, 10, 5, 13, 7])
def test_epilogue_in_place(isa, cr):
    """The float path's epilogue in one pass: y + cfb(residual, O), LearnableBias -> PReLU -> LearnableBias, ReLU,
    plane sums; the same float ops as the unfused torch modules (CFB's merged means to rounding)."""
    from bindense.binary import cfb

    n, o = 2, 10
    y, res = rand(n, o, 7, 9, seed=60), rand(n, cr, 7, 9, seed=61)
    bias, slope, after = rand(o, seed=62), rand(o, seed=63).abs() * 0.2, rand(o, seed=64)
    want = F.prelu(y + cfb(res, o) + bias.view(1, -1, 1, 1), slope) + after.view(1, -1, 1, 1)
    sums = torch.empty(n, o, dtype=torch.float64)
    got = native.epilogue_(y.clone(), res, (bias, slope, after), channel_sums=sums)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sums, got.double().sum(dim=(2, 3)), rtol=1e-6, atol=1e-6)
    assert torch.equal(native.epilogue_(y.clone(), relu=True), y.clamp_min(0))
    with pytest.raises(ValueError, match="residual must be"):
        native.epilogue_(y.clone(), rand(n, cr, 7, 8))


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[2]], ids=["3x3", "1x1"])
def test_unpack_weights_scaled(isa, case):
    _, c, o, _, _, k, _, _, g = case
    wt = rand(o, c // g, k, k, seed=70)
    scale = rand(o, seed=71)
    got = native.unpack_weights_scaled(native.pack_weights(wt), c // g, scale)
    assert got.is_contiguous() and torch.equal(got, sgn(wt) * scale.view(-1, 1, 1, 1))
