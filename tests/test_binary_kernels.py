"""Native kernels of the fused unit (model.unit_kernels=native) and the one-node CFB add.

The kernels' per-plane sums run in another order than torch's (double lanes), so they are checked against the
float64 formulas at tight tolerances; every elementwise value given those sums must equal the eager float32
expression bit for bit. Each test runs on every ISA path this CPU has.
"""

from __future__ import annotations

import copy

import pytest
import torch
from binary_units import DAB_UNITS, perturbed, run_unit

from bindense import native
from bindense.binary import BiasPReLU, BinaryConv2d, RPReLU
from bindense.binary import kernels as K
from bindense.binary.bypass import cfb, cfb_add_
from bindense.binary.fused import BinaryConvFunction, ConvGeometry
from bindense.binary.layers import configure_lean

ISAS = [name for name in native.supported_isas() if name != "torch"]
pytestmark = pytest.mark.skipif(not ISAS, reason="no native build")
SHAPES = [(2, 5, 7, 9), (1, 17, 4, 4), (3, 3, 1, 1), (2, 33, 16, 17)]  # planes of 63, 16, 1, 272 elements


@pytest.fixture(params=ISAS)
def isa(request):
    native.set_isa(request.param)
    yield request.param
    native.set_isa(None)


def _input(*shape: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * scale
    x.view(-1)[:5] = torch.tensor([-1.0, 0.0, 1.0, -0.0, 0.5])
    return x


def _params(c: int, seed: int, zero_shift: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DAB's a, k, b shaped (1, C, 1, 1); with ``zero_shift`` k = b = 0, so that s = x hits -0.0 and |s| = 1."""
    g = torch.Generator().manual_seed(seed)
    a, k, b = (torch.randn(1, c, 1, 1, generator=g) * 0.5 for _ in range(3))
    return (a, k * 0, b * 0) if zero_shift else (a, k, b)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a, b) and torch.equal(torch.signbit(a), torch.signbit(b))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("zero_shift", [False, True])
def test_dab_forward_matches_formulas(isa, shape, zero_shift) -> None:
    x = _input(*shape, seed=shape[1])
    a, k, b = _params(shape[1], 1, zero_shift)
    xb, mean_x, mean_abs_s, alpha, thr = K.dab_forward(x, a, k, b, isa)
    # the statistics against float64
    x64, a64, k64, b64 = (t.double() for t in (x, a, k, b))
    mean64 = x64.mean(dim=(2, 3), keepdim=True)
    s64 = x64 - (k64 * mean64 + b64)
    mean_abs64 = s64.abs().mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(mean_x.double(), mean64, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(mean_abs_s.double(), mean_abs64, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(alpha.double(), torch.exp(a64 * (mean_abs64 - 1)), rtol=1e-6, atol=0.0)
    # elementwise: the eager node's float32 expressions of those statistics, bit for bit (-0.0 -> +0.0)
    assert _same_bits(thr, k * mean_x + b)
    s = (x - thr).add_(0.0)
    torch.testing.assert_close(s.double(), s64, rtol=1e-6, atol=1e-6)
    assert _same_bits(xb, torch.copysign(alpha, s))
    # alpha: the C library's expf of the float32 exponent, within an ulp of it (torch's exp: SLEEF, also <= 1 ulp)
    exponent = a * (mean_abs_s - 1.0)
    torch.testing.assert_close(alpha.double(), exponent.double().exp(), rtol=2**-23, atol=0.0)
    if zero_shift:  # s = x: the -0.0 input binarizes to +alpha of its plane
        assert xb.view(-1)[3] == alpha.view(-1)[3 // (shape[2] * shape[3])] > 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("zero_shift", [False, True])
def test_dab_backward_matches_formulas(isa, shape, zero_shift) -> None:
    x = _input(*shape, seed=shape[2])
    a, k, b = _params(shape[1], 2, zero_shift)
    xb, _, _, alpha, thr = K.dab_forward(x, a, k, b, isa)
    s = (x - thr).add_(0.0)  # the eager node's s, which the kernels recompute from x and thr
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    assert _same_bits(K.dab_rebuild(x, thr, alpha, isa), xb)
    grad_s, sum_gxb, sum_grad = K.dab_backward(x, thr, grad.clone(), alpha, isa)
    # the ApproxSign surrogate 2 max(1 - |s|, 0) times alpha: the eager expression, bit for bit
    eager = s.abs().sub_(1.0).clamp_(max=0.0).mul_(grad).mul_(-2.0 * alpha)
    assert _same_bits(grad_s, eager)
    # the same pass rebuilding xb on the side: the same gradient and sums, and the rebuild's xb
    *same, xb_again = K.dab_backward(x, thr, grad.clone(), alpha, isa, rebuild=True)
    for u, v in zip(same, (grad_s, sum_gxb, sum_grad)):
        assert _same_bits(u, v)
    assert _same_bits(xb_again, xb)
    if zero_shift:  # |s| = 1 and s = 0 in the input: no gradient at the clip point, 2 alpha g at 0
        assert grad_s.view(-1)[0] == 0 and grad_s.view(-1)[2] == 0
        assert grad_s.view(-1)[1] == 2 * alpha.view(-1)[1 // (shape[2] * shape[3])] * grad.view(-1)[1]
    # the per-plane sums against float64
    g64 = grad.double()
    torch.testing.assert_close(sum_gxb.double(), (g64 * xb.double()).sum(dim=(2, 3), keepdim=True), rtol=1e-6,
                               atol=1e-6)
    torch.testing.assert_close(sum_grad.double(), grad_s.double().sum(dim=(2, 3), keepdim=True), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("shape", [(10, 6, 3, 3), (7, 1, 7, 7), (3, 33, 1, 1), (1, 5, 2, 2)])
def test_weight_binarization_matches_formulas(isa, shape) -> None:
    g = torch.Generator().manual_seed(shape[0])
    w = torch.randn(shape, generator=g) * 0.7  # both sides of the clip at |W| = 1
    w.view(-1)[:3] = torch.tensor([-0.0, 1.0, -1.0])
    wb, scale, all_inside = K.weight_forward(w, True, isa)
    torch.testing.assert_close(scale.double(), w.double().abs().mean(dim=(1, 2, 3), keepdim=True), rtol=1e-6,
                               atol=0.0)
    assert _same_bits(wb, torch.copysign(scale, w + 0.0))
    assert wb.view(-1)[0] > 0  # sign(-0.0) = +1
    assert _same_bits(K.weight_rebuild(w, scale, isa), wb)
    assert all_inside == bool((w.abs() <= 1).all())
    _, _, inside = K.weight_forward(w.clamp(-1, 1), True, isa)
    assert inside
    for at in (5, -1):  # in the first 16-element block of a row (the vector count) and in the last row's tail
        w_nan = w.clamp(-1, 1)
        w_nan.view(-1)[at] = float("nan")
        assert not K.weight_forward(w_nan, True, isa)[2]
    w_big = w.clamp(-1, 1)
    w_big.view(-1)[5] = 1.5  # one weight outside in a vector block
    assert not K.weight_forward(w_big, True, isa)[2]


UNITS = {**DAB_UNITS, "dab_pw_merge": lambda: BinaryConv2d(24, 6, 1)}


def _run(unit: torch.nn.Module, x: torch.Tensor, reference: bool = False) -> list[torch.Tensor]:
    out, grad_x, grads = run_unit(unit, x, reference)
    return [out, grad_x, *grads.values()]


def _native_node(unit: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether the unit ran as a fused node on the native kernels (the node's ``isa``)."""
    stack, seen = [unit(x.clone().requires_grad_(True)).grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__ == "BinaryConvFunctionBackward":
            return fn.isa is not None
        stack.extend(f for f, _ in fn.next_functions)
    return False


@pytest.mark.parametrize("name", list(UNITS))
def test_native_unit_matches_reference(isa, name) -> None:
    """Values and every gradient (x, a, k, b, weight, BN) of the native float32 unit against the float64
    reference composition, at float32 precision relative to each tensor's scale."""
    unit = perturbed(UNITS[name]())
    x = _input(2, unit.in_channels, 8, 8, seed=4)
    assert _native_node(unit, x)
    got = _run(unit, x)
    ref = _run(unit.double(), x.double(), reference=True)
    eager = _run(configure_lean(copy.deepcopy(unit).float(), unit_kernels="eager"), x)
    for i, (g, r, e) in enumerate(zip(got, ref, eager)):
        assert r.abs().sum() > 0, i
        scale = max(r.abs().max().item(), 1.0)  # (a conv bias before BN has a gradient of 0 up to rounding)
        torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=5e-6 * scale, msg=lambda m, i=i: f"{i}: {m}")
        torch.testing.assert_close(g, e, rtol=1e-5, atol=5e-6 * scale, msg=lambda m, i=i: f"{i}: {m}")


@pytest.mark.parametrize("stride, groups, frozen", [(1, 1, False), (2, 1, False), (1, 4, False), (1, 8, False),
                                                    (1, 1, True)])
def test_native_backward_is_one_convolution_backward(isa, stride, groups, frozen) -> None:
    """The node's backward (the input gradient first, then the weight gradient from the xb that DAB's backward
    kernel rebuilt) gives the bits of the binarized operands through one ``convolution_backward`` call."""
    x = _input(2, 8, 9, 9, seed=5)
    a, k, b = _params(8, 6, False)
    weight = torch.randn(8, 8 // groups, 3, 3, generator=torch.Generator().manual_seed(7)) * 0.6
    bias = torch.randn(8, generator=torch.Generator().manual_seed(8))
    leaves = [t.clone().requires_grad_(not (frozen and i in (1, 2))) for i, t in enumerate((x, weight, bias, a, k, b))]
    geometry = ConvGeometry((stride, stride), (1, 1), (1, 1), False, (0, 0), groups)
    out = BinaryConvFunction.apply(*leaves, "dab", "scaled_sign", (1, 2, 3), geometry, "exact", "native")
    assert out.grad_fn.isa == isa
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
    got = torch.autograd.grad(out, [t for t in leaves if t.requires_grad], grad)
    xb, _, _, alpha, thr = K.dab_forward(x, a, k, b, isa)
    wb = K.weight_forward(weight, True, isa)[0]
    grad_xb, grad_wb, grad_bias = geometry.backward(grad, xb, wb, bias, [True, True, True])
    want = [K.dab_backward(x, thr, grad_xb, alpha, isa)[0]]
    if not frozen:
        want += [grad_wb * (weight.abs() <= 1), grad_bias]
    for g, w in zip(got, want):
        assert _same_bits(g, w)


def test_every_isa_path_gives_the_same_bits() -> None:
    """The sums run in a fixed lane order, whatever the vector width: every path's outputs and gradients agree."""
    unit = perturbed(BinaryConv2d(20, 24, 3, padding=1))
    x = _input(2, 20, 11, 13, seed=5)
    results = {}
    for name in ISAS:
        native.set_isa(name)
        try:
            results[name] = _run(unit, x)
        finally:
            native.set_isa(None)
    first = results[ISAS[0]]
    for name, res in results.items():
        for i, (a, b) in enumerate(zip(first, res)):
            assert _same_bits(a, b), (name, i)


def test_two_threads_same_result(isa) -> None:
    """Each plane / row is one task: the split over threads does not change a bit."""
    x, (a, k, b) = _input(2, 96, 24, 24, seed=6), _params(96, 6, False)
    w = torch.randn(64, 96, 3, 3, generator=torch.Generator().manual_seed(6))
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))

    def run():
        xb, *stats = K.dab_forward(x, a, k, b, isa)
        back = K.dab_backward(x, stats[3], grad.clone(), stats[2], isa)
        return [xb, *stats, *back, *K.weight_forward(w, True, isa)[:2]]

    one = run()
    torch.set_num_threads(2)  # the autouse fixture restores the thread count
    for u, v in zip(one, run()):
        assert _same_bits(u, v)


@pytest.mark.parametrize("setting", ["torch_isa", "float64", "eager"])
def test_eager_fallback_is_bit_identical(setting) -> None:
    """Where the kernels do not apply (BINDENSE_ISA=torch, float64) or unit_kernels=eager, the node runs the
    eager ops: bit for bit the unfused path."""
    unit = perturbed(BinaryConv2d(6, 10, 3, padding=1))
    x = _input(2, 6, 8, 8, seed=8)
    if setting == "float64":
        unit, x = unit.double(), x.double()
    if setting == "eager":
        unit = configure_lean(unit, unit_kernels="eager")
    unfused = configure_lean(copy.deepcopy(unit), fused=False)
    native.set_isa("torch" if setting == "torch_isa" else None)
    try:
        assert not _native_node(unit, x)
        for a, b in zip(_run(unit, x), _run(unfused, x)):
            assert torch.equal(a, b)
    finally:
        native.set_isa(None)


def test_saved_bytes_unchanged(isa) -> None:
    """The native node keeps what the eager one keeps: s (4 bytes per input element) and per-plane statistics."""
    x = _input(2, 16, 12, 12)
    unit = BinaryConv2d(16, 32, 3, padding=1, norm=False, bypass="none")
    seen: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in unit.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unit(x.clone().requires_grad_(True))
    assert 4 * x.numel() <= sum(seen.values()) <= 4 * x.numel() + 1024


def test_unknown_unit_kernels_rejected() -> None:
    with pytest.raises(ValueError, match="model.unit_kernels"):
        configure_lean(BinaryConv2d(4, 4, 1), unit_kernels="cuda")


CFB_CASES = [(4, 16), (16, 4), (6, 15), (10, 3), (5, 1), (7, 9), (4, 4)]  # tiles, merges, both, identity


@pytest.mark.parametrize("cin, cout", CFB_CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_cfb_add_equals_composition(cin, cout, channels_last) -> None:
    """``cfb_add_(y, x)``: the value of ``y + cfb(x)`` bit for bit, in ``y``'s buffer, and the same gradients,
    without the composition's zero-filled slice buffers."""
    g = torch.Generator().manual_seed(cin * 31 + cout)
    y0, x0 = torch.randn(2, cout, 5, 6, generator=g), torch.randn(2, cin, 5, 6, generator=g)
    x0.view(-1)[0] = -0.0
    if channels_last:
        y0, x0 = y0.contiguous(memory_format=torch.channels_last), x0.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, cout, 5, 6, generator=g)
    results = []
    for fn in (cfb_add_, lambda y, x: y + cfb(x, y.shape[1])):
        y, x = y0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
        inner = y * 1.0  # a fresh non-leaf output, as a unit's norm gives
        out = fn(inner, x)
        out.backward(grad)
        results.append((out.detach(), y.grad, x.grad, out.data_ptr() == inner.data_ptr()))
    (*ours, in_place), (*composed, _) = results
    for a, b in zip(ours, composed):
        assert torch.equal(a, b)
    assert in_place
    with torch.no_grad():  # the same without autograd (evaluation)
        y = y0.clone()
        assert torch.equal(cfb_add_(y, x0), results[1][0]) and torch.equal(y, results[1][0])


@pytest.mark.parametrize("bias_after", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 3, 4, 4), (2, 4, 1, 1)])
def test_bias_prelu_native_equals_modules(isa, bias_after, shape) -> None:
    """LearnableBias -> PReLU [-> LearnableBias] as one native node: the modules' output and every gradient bit for
    bit (so training follows the same trajectory), and against float64; a hook falls back to the modules."""
    torch.manual_seed(shape[1])
    act = BiasPReLU(shape[1], bias_after)
    with torch.no_grad():
        for p in act.parameters():
            p.normal_()
    modules = configure_lean(copy.deepcopy(act), unit_kernels="eager")
    x = _input(*shape, seed=shape[0])
    x.view(-1)[:2] = -act[0].bias.view(-1)[0].item()  # t = x + b1 = 0 exactly: the PReLU's branch point
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(9))
    results = []
    for m in (act, modules):
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        y.backward(grad)
        results.append((y.detach(), xi.grad, {n: p.grad for n, p in m.named_parameters()}, y.grad_fn))
    (y_n, gx_n, gp_n, fn_n), (y_m, gx_m, gp_m, fn_m) = results
    assert type(fn_n).__name__ == "BiasPReLUFunctionBackward" and "BiasPReLU" not in type(fn_m).__name__
    assert _same_bits(y_n, y_m) and _same_bits(gx_n, gx_m)
    x64, g64 = x.double(), grad.double()
    t64 = x64 + act[0].bias.double()
    neg = t64 <= 0
    expected = {
        "0.bias": torch.where(neg, act[1].weight.double().view(1, -1, 1, 1) * g64, g64).sum(dim=(0, 2, 3)),
        "1.weight": torch.where(neg, t64 * g64, 0.0).sum(dim=(0, 2, 3)),
        "2.bias": g64.sum(dim=(0, 2, 3)),
    }
    assert gp_n.keys() == gp_m.keys() == set(expected) - ({"2.bias"} if not bias_after else set())
    for key, grad_p in gp_n.items():
        assert _same_bits(grad_p, gp_m[key]), key
        torch.testing.assert_close(grad_p.double().view(-1), expected[key], rtol=1e-5, atol=1e-5)
    hooked = copy.deepcopy(act)
    hooked[1].register_forward_hook(lambda *args: None)
    assert "BiasPReLU" not in type(hooked(x.clone().requires_grad_(True)).grad_fn).__name__
    with torch.no_grad():
        assert _same_bits(act(x), y_m)


def test_bias_prelu_same_bits_on_every_isa_path() -> None:
    torch.manual_seed(3)
    act = RPReLU(6)
    with torch.no_grad():
        for p in act.parameters():
            p.normal_()
    x, grad = _input(2, 6, 9, 11, seed=4), torch.randn(2, 6, 9, 11, generator=torch.Generator().manual_seed(5))
    results = []
    for name in ISAS:
        native.set_isa(name)
        try:
            act.zero_grad()
            xi = x.clone().requires_grad_(True)
            act(xi).backward(grad)
            results.append([xi.grad, *(p.grad.clone() for p in act.parameters())])
        finally:
            native.set_isa(None)
    for res in results[1:]:
        assert all(_same_bits(a, b) for a, b in zip(results[0], res))


def test_non_contiguous_dab_parameter_runs_the_eager_ops() -> None:
    """The kernels read DAB's parameters as flat buffers: a non-contiguous one (here an expanded ``a``) sends the
    node to its eager ops, with the eager node's values and gradients (on the unit itself: a deep copy would make
    the parameter contiguous)."""
    unit = perturbed(BinaryConv2d(6, 10, 3, padding=1))
    dab = unit.activation_binarizer
    dab.a = torch.nn.Parameter(dab.a.detach()[:, :1].expand_as(dab.a))
    assert not dab.a.is_contiguous()
    x = _input(2, 6, 8, 8, seed=8)

    def run() -> list[torch.Tensor]:
        xi = x.clone().requires_grad_(True)
        out = unit(xi)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(3)))
        grads = [p.grad for p in unit.parameters()]
        unit.zero_grad(set_to_none=True)
        return [out.detach(), xi.grad, *grads]

    assert not _native_node(unit, x)
    got = run()
    configure_lean(unit, unit_kernels="eager")
    for i, (g, want) in enumerate(zip(got, run())):
        assert _same_bits(g, want), i


def test_train_kernel_bench_times_every_kernel_on_every_path() -> None:
    """``scripts/benchmark.py --train-kernels``: a row per kernel and ISA path, the torch.add anchor, a table."""
    from bindense.binary import kernel_bench

    rows = kernel_bench.train_kernels(shapes=((1, 3, 5, 7),), threads=1, rounds=1, warmup=0)
    got = {(r["kernel"], r["isa"]) for r in rows}
    assert got == {(k, i) for k in kernel_bench.KERNELS for i in ISAS} | {("add", "torch")}
    assert all(r["ms"] >= 0 and r["shape"] == [1, 3, 5, 7] for r in rows)
    table = kernel_bench.format_rows(rows)
    assert all(k in table for k in kernel_bench.KERNELS) and "| [1, 3, 5, 7], 1 threads, ms | " in table


def test_dab_unit_evaluates_on_the_native_kernel(isa, monkeypatch) -> None:
    """Without autograd a DAB unit binarizes its input on the native kernel (its weight through the weight
    binarizer module, as the export writes it): the eager modules' output within float32 rounding of the
    statistics; a hooked DAB, or unit_kernels=eager, runs the modules."""
    unit = perturbed(BinaryConv2d(6, 10, 3, padding=1)).eval()
    x = _input(2, 6, 8, 8, seed=9)
    calls, real = [], K.dab_forward
    monkeypatch.setattr(K, "dab_forward", lambda *args: calls.append(args[4]) or real(*args))
    with torch.no_grad():
        got = unit(x)
        want = configure_lean(copy.deepcopy(unit), unit_kernels="eager")(x)
        handle = unit.activation_binarizer.register_forward_hook(lambda *_: None)
        hooked = unit(x)
        handle.remove()
    assert calls == [isa]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(hooked, want)
    weight_calls = []  # where the kernel does not apply (float64), the weight is binarized once, by the module path
    unit.double().weight_binarizer.register_forward_hook(lambda *_: weight_calls.append(1))
    with torch.no_grad():
        unit(x.double())
    assert calls == [isa] and weight_calls == [1]


def test_non_contiguous_activation_bias_runs_the_modules() -> None:
    """RPReLU with a non-contiguous second bias (the kernels read flat buffers) runs its modules, no error."""
    act = RPReLU(4)
    act[2].bias = torch.nn.Parameter(torch.full((1, 1, 1, 1), 0.3).expand(1, 4, 1, 1))
    x = _input(2, 4, 5, 6, seed=10)
    assert act._native_isa(x) is None
    want = torch.nn.Sequential(*act)(x)
    assert _same_bits(act(x), want)
