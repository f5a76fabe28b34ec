"""The native runtime's DPT + ViT units (``bindense.export.runtime_dpt``): binary linears over tokens and
transposed convs with kernel == stride, against the unpacked units on every ISA path, and whole DPT models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bindense import native
from bindense.binary import BinaryConvTranspose2d, BinaryLinear
from bindense.export import export_packed, load_packed
from bindense.export.deploy import deploy_overrides, deploy_size, perturb_
from bindense.export.packed import BINARY_UNITS, _channel_dim, encode_binary_weight
from bindense.export.runtime import NativeBinaryConv2d, NativeModel, resident_bytes
from bindense.export.runtime_dpt import NativeAttention, NativeBinaryConvTranspose2d, NativeBinaryLinear
from bindense.models import build_model

ISAS = sorted(set(native.supported_isas()) | {"torch"}, key=native.ISAS.index)


@pytest.fixture(params=ISAS)
def isa(request):
    native.set_isa(request.param)
    yield request.param
    native.set_isa(None)


def _tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    x[x.abs() < 0.05] = 0.0  # exact zeros: they must count as +1
    return x


def _perturb(unit: nn.Module, seed: int) -> nn.Module:
    """Move every parameter (and BN statistic) away from its init; AdaBin's alpha stays positive."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unit.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.05 if name.endswith("alpha") else 0.3))
        for m in unit.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return unit.eval()


def _encoded(unit: nn.Module) -> tuple[str, dict[str, torch.Tensor], int]:
    channel_dim = _channel_dim(unit)
    with torch.no_grad():
        encoding, parts = encode_binary_weight(unit.binary_weight().detach(), channel_dim)
    return encoding, parts, channel_dim


def _close(got: torch.Tensor, want: torch.Tensor, msg: str = "") -> None:
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item(), msg=msg)


# (activation, weight, dab groups, popcount path)
LINEARS = [
    ("bivit", "bivit_sign", None, True),  # bidense / cfb_only ViT
    ("rsign", "scaled_sign", None, True),  # reactnet ViT
    ("rsign", "centered_sign", None, True),
    ("sign", "sign", None, True),  # bnn
    ("bisr", "scaled_sign", None, True),
    ("adabin", "adabin", None, True),
    ("dab", "scaled_sign", 64, True),
    ("dab", "scaled_sign", 3, True),
    ("dab", "scaled_sign", "all", True),
    ("dab", "scaled_sign", None, False),  # per-channel DAB: a weighted binary GEMM, the float path
]
# (batch, tokens, in, out, bias, bypass)
LINEAR_SHAPES = [(2, 17, 70, 130, True, "none"), (1, 50, 130, 65, False, "cfb"), (1, 1, 5, 7, True, "cfb")]


@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + f"-{s[5]}")
@pytest.mark.parametrize("case", LINEARS, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_native_linear_equals_the_unit(isa: str, case: tuple, shape: tuple) -> None:
    activation, weight, groups, popcount = case
    b, t, cin, cout, bias, bypass = shape
    torch.manual_seed(cin + cout)
    unit = BinaryLinear(cin, cout, bias, activation, weight, bypass, activation_groups=groups)
    _perturb(unit, seed=cout)
    encoding, parts, _ = _encoded(unit)
    native_unit = NativeBinaryLinear(unit, encoding, parts, "fc")
    assert native_unit.float_path == (not popcount)
    assert (native_unit.weights is not None) == popcount and (native_unit.w_bits is None) == popcount
    x = _tokens(b, t, cin, seed=t)
    with torch.no_grad():
        want = unit(x)
        got = native_unit(x)
        assert got.shape == want.shape
        _close(got, want)
        # tokens in another memory layout (channel-major, as a native linear returns them) give the same output
        _close(native_unit(x.transpose(1, 2).contiguous().transpose(1, 2)), want)


# (activation, weight, dab groups, weight scale axis, popcount path)
TRANSPOSED = [
    ("rsign", "scaled_sign", None, 1, True),  # transpose_scale=output
    ("rsign", "scaled_sign", None, 0, False),  # the authors' per-input-channel scale: a weighted binary GEMM
    ("dab", "scaled_sign", 64, 1, True),
    ("dab", "scaled_sign", 3, 1, True),
    ("dab", "scaled_sign", 64, 0, False),
    ("dab", "scaled_sign", None, 1, False),  # per-channel DAB
    ("sign", "sign", None, 0, True),  # no weight scale at all
    ("bisr", "scaled_sign", None, 1, True),
    ("adabin", "adabin", None, 1, False),  # AdaBin's offsets: the float path
]
# (batch, in, out, kernel == stride, H, W, bias, norm, bypass)
TRANSPOSED_SHAPES = [
    (1, 48, 48, 4, 5, 7, False, True, "cfb"),  # DPT Up x4
    (2, 64, 128, 2, 6, 3, True, True, "cfb"),  # CFB tiles its input twice
    (1, 70, 45, 3, 4, 4, True, False, "cfb"),  # CFB merges channels
    (1, 130, 96, 2, 3, 5, False, True, "none"),
]


@pytest.mark.parametrize("shape", TRANSPOSED_SHAPES, ids=lambda s: f"{s[1]}-{s[2]}-k{s[3]}-{s[8]}")
@pytest.mark.parametrize("case", TRANSPOSED, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-dim{c[3]}")
def test_native_transposed_conv_equals_the_unit(isa: str, case: tuple, shape: tuple) -> None:
    activation, weight, groups, channel_dim, popcount = case
    b, cin, cout, k, h, w, bias, norm, bypass = shape
    torch.manual_seed(cin + cout + k)
    unit = BinaryConvTranspose2d(cin, cout, k, stride=k, bias=bias, activation=activation, weight=weight,
                                 bypass=bypass, norm=norm, activation_groups=groups, weight_channel_dim=channel_dim)
    _perturb(unit, seed=cout)
    encoding, parts, cd = _encoded(unit)
    native_unit = NativeBinaryConvTranspose2d(unit, encoding, parts, "up", cd)
    assert native_unit.popcount == popcount
    assert (native_unit.weights is not None) == popcount and (native_unit.w_signs is None) == popcount
    x = _tokens(b, cin, h, w, seed=h)
    with torch.no_grad():
        want = unit(x)
        got = native_unit(x)
    assert got.shape == want.shape == (b, cout, h * k, w * k)
    _close(got, want)


def test_popcount_units_call_the_native_kernel(monkeypatch) -> None:
    calls = [0]
    real = native.binary_conv2d

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(native, "binary_conv2d", counting)
    unit = _perturb(BinaryLinear(70, 30, True, "rsign", "scaled_sign"), 0)
    native_unit = NativeBinaryLinear(unit, *_encoded(unit)[:2], "fc")
    up = _perturb(BinaryConvTranspose2d(48, 48, 4, stride=4, activation="rsign", weight_channel_dim=1), 0)
    enc, parts, cd = _encoded(up)
    native_up = NativeBinaryConvTranspose2d(up, enc, parts, "up", cd)
    assert native_up.popcount
    with torch.no_grad():
        native_unit(_tokens(1, 9, 70))
        native_up(_tokens(1, 48, 3, 3))
    assert calls[0] == 2


def test_bad_input_names_the_unit_and_what_was_expected() -> None:
    unit = _perturb(BinaryLinear(70, 30, True, "rsign", "scaled_sign"), 0)
    fc = NativeBinaryLinear(unit, *_encoded(unit)[:2], "blocks.0.mlp.fc1")
    expected = r"unit 'blocks.0.mlp.fc1'.*\[B, T, 70\] of tokens.*got torch.float32 \[1, 9, 71\]"
    with pytest.raises(ValueError, match=expected):
        fc(torch.randn(1, 9, 71))
    with pytest.raises(ValueError, match=r"\[B, T, 70\].*got torch.float64"):
        fc(torch.randn(1, 9, 70, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[B, T, 70\].*got torch.float32 \[1, 70, 3, 3\]"):
        fc(torch.randn(1, 70, 3, 3))
    with pytest.raises(TypeError, match=r"tokens"):
        fc([0.0] * 70)
    up = _perturb(BinaryConvTranspose2d(48, 48, 4, stride=4, activation="rsign", weight_channel_dim=1), 0)
    enc, parts, cd = _encoded(up)
    native_up = NativeBinaryConvTranspose2d(up, enc, parts, "decoder.resize.0", cd)
    expected = r"unit 'decoder.resize.0'.*\[N, 48, H, W\].*got torch.float32 \[1, 47, 3, 3\]"
    with pytest.raises(ValueError, match=expected):
        native_up(torch.randn(1, 47, 3, 3))
    with pytest.raises(ValueError, match=r"\[N, 48, H, W\].*got torch.float16"):
        native_up(torch.randn(1, 48, 3, 3, dtype=torch.float16))
    x = torch.randn(1, 48, 3, 5)
    with torch.no_grad():  # a non-contiguous map is made contiguous (as the conv units do)
        _close(native_up(x.transpose(2, 3)), native_up(x.transpose(2, 3).contiguous()))


# ------------------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize(
    ("dim", "heads", "activation", "normalize"),
    [(96, 3, "bivit", True), (384, 6, "rsign", True), (40, 2, "sign", False), (96, 3, "bisr", True)],
)
def test_native_attention_selects_the_same_keys_without_softmax(
    dim: int, heads: int, activation: str, normalize: bool
) -> None:
    from bindense.models.spec import MethodSpec
    from bindense.models.vit import Attention

    spec = MethodSpec.from_config(dict(layout="bidense", linear_activation=activation, linear_weight="scaled_sign"))
    torch.manual_seed(dim)
    attention = _perturb(Attention(spec, dim, heads, normalize=normalize), seed=dim)
    gap = NativeAttention.integer_gap(attention)
    assert gap is not None and gap % 2 == 0
    fast = NativeAttention(attention, gap)
    x = _tokens(2, 33, dim, seed=heads)
    with torch.no_grad():
        _close(fast(x), attention(x))
        # the integer rule is the softmax rule: the selected keys of every row are the same
        q, k, _ = attention.qkv(x).chunk(3, dim=-1)
        q, k = (b(t).reshape(2, 33, heads, -1).transpose(1, 2) for b, t in ((attention.q_binarizer, q),
                                                                            (attention.k_binarizer, k)))
        scores = q @ k.transpose(-2, -1)
        p = (scores * attention.scale).softmax(-1)
        assert torch.equal(p >= 0.25 * p.amax(-1, keepdim=True), scores >= scores.amax(-1, keepdim=True) - gap)


def test_native_attention_refuses_where_the_integer_rule_is_not_safe() -> None:
    import math

    from bindense.models.spec import MethodSpec
    from bindense.models.vit import Attention

    spec = MethodSpec.from_config(dict(layout="bidense"))
    scale = 16**-0.5
    on_the_edge = Attention(spec, 64, 4, threshold=math.exp(-4 * scale))  # the threshold at a reachable gap (4)
    assert NativeAttention.integer_gap(on_the_edge) is None
    assert NativeAttention.integer_gap(Attention(spec, 64, 4)) == 4  # 0.25: -ln 4 / scale = 5.55
    adabin = MethodSpec.from_config(dict(layout="bnn", linear_activation="adabin", linear_weight="adabin"))
    assert NativeAttention.integer_gap(Attention(adabin, 64, 4)) is None  # q, k not +-1
    fp32 = MethodSpec.from_config(dict(layout="bidense", linear_activation="fp32", linear_weight="fp32"))
    assert NativeAttention.integer_gap(Attention(fp32, 64, 4)) is None  # softmax attention


# ------------------------------------------------------------------------------------------- whole DPT models

REACTNET = dict(layout="bnn", activation="rsign", weight="scaled_sign", block_act="prelu", decoder_act="prelu",
                fusion_act="rprelu", bias=False, linear_activation="rsign", linear_weight="scaled_sign")  # fmt: skip
DPT_METHODS: dict[str, dict[str, Any]] = {
    "reactnet": REACTNET,
    "bidense": dict(layout="bidense"),
    "bidense_g64_output": dict(layout="bidense", dab_groups=64, transpose_scale="output"),
    "adabin": dict(layout="bnn", activation="adabin", weight="adabin", block_act="maxout", decoder_act="maxout",
                   fusion_act="maxout", bias=False, linear_activation="adabin", linear_weight="adabin"),
}  # fmt: skip


def _dpt_config(method: dict[str, Any]) -> dict[str, Any]:
    model = dict(_target_="bindense.models.build_model", decoder="dpt", backbone="vit", width="nano",
                 method=method, tasks=["seg"], num_classes=13)  # fmt: skip
    return {"model": model}


def _dpt(method: dict[str, Any], seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(**{k: v for k, v in _dpt_config(method)["model"].items() if k != "_target_"})
    return perturb_(model, seed)


def _export_dpt(tmp_path: Path, name: str, seed: int = 1) -> Path:
    path = tmp_path / f"{name}-{seed}.bdn"
    export_packed(_dpt(DPT_METHODS[name], seed), path, config=_dpt_config(DPT_METHODS[name]))
    return path


NATIVE = (NativeBinaryConv2d, NativeBinaryLinear, NativeBinaryConvTranspose2d)


@pytest.mark.parametrize("name", sorted(DPT_METHODS))
def test_every_dpt_unit_is_native_and_equals_the_unpacked_unit(tmp_path: Path, name: str) -> None:
    path = _export_dpt(tmp_path, name)
    reference, packed = load_packed(path), load_packed(path, runtime="native")
    assert isinstance(packed, NativeModel)
    left = [n for n, m in packed.named_modules() if isinstance(m, BINARY_UNITS) and m.is_binary]
    assert not left, f"binary units left on the torch path: {left}"
    units = {n: m for n, m in packed.model.named_modules() if isinstance(m, NATIVE)}
    linears = [m for m in units.values() if isinstance(m, NativeBinaryLinear)]
    ups = [m for m in units.values() if isinstance(m, NativeBinaryConvTranspose2d)]
    assert len(linears) == 16 and len(ups) == 2  # 4 blocks x (qkv, proj, fc1, fc2); Up x4, Up x2
    assert all(not m.float_path for m in linears)  # every ViT linear binarizer of the presets is a popcount
    assert all(m.popcount == (name == "bidense_g64_output") for m in ups)
    attention = {n: m for n, m in packed.model.named_modules() if isinstance(m, NativeAttention)}
    assert len(attention) == (0 if name == "adabin" else 4)  # AdaBin's q, k are not +-1: the model's attention
    units.update(attention)
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(n: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen.setdefault(n, (inputs[0], output))

        return hook

    hooks = [reference.get_submodule(n).register_forward_hook(keep(n)) for n in units]
    with torch.no_grad():
        want_model = reference(torch.randn(1, 3, 56, 84))["seg"]
        for hook in hooks:
            hook.remove()
        assert len(seen) == len(units)
        for n, (x, want) in seen.items():
            got = units[n](x if x.dim() == 3 else x.contiguous())
            want = want.clamp_min(0) if getattr(units[n], "relu", False) else want  # a ReLU fused into the unit
            _close(got, want, msg=n)
    assert want_model.shape == (1, 13, 56, 84)


def test_dpt_native_model_weights_once_state_dict_and_bad_input(tmp_path: Path) -> None:
    reference = load_packed(_export_dpt(tmp_path, "bidense_g64_output"))
    first = load_packed(_export_dpt(tmp_path, "bidense_g64_output"), runtime="native")
    second = load_packed(_export_dpt(tmp_path, "bidense_g64_output", seed=2), runtime="native")
    token_units = [m for m in first.modules() if isinstance(m, NativeBinaryLinear | NativeBinaryConvTranspose2d)]
    assert all(m.weights is not None and m.w_bits is None for m in token_units if isinstance(m, NativeBinaryLinear))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in list(first.parameters()) + list(first.buffers())}  # fmt: skip
    prepared = [m.weights for m in first.modules() if isinstance(getattr(m, "weights", None), native.PreparedWeights)]
    assert resident_bytes(first) == sum(storages.values()) + sum(w.nbytes for w in prepared)
    assert sum(w.nbytes for w in prepared) > sum(m.weights.nbytes for m in token_units) > 0  # counted with the rest
    binary_weights = sum(u.weight.numel() for u in reference.modules() if isinstance(u, BINARY_UNITS) and u.is_binary)
    assert resident_bytes(reference) - resident_bytes(first) > 0.9 * binary_weights * 4
    state = first.state_dict()
    names = [n for n, m in first.named_modules() if m in token_units]
    assert {f"{n}.w_bits" for n in names} <= set(state)
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        want = first(x)["seg"]
        assert not torch.equal(second(x)["seg"], want)
        second.load_state_dict(state)
        torch.testing.assert_close(second(x)["seg"], want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="contiguous"):
        first(x.transpose(2, 3))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\].*got torch.float64"):
        first(x.double())


def test_deploy_benchmark_handles_dpt(tmp_path: Path) -> None:
    """Model and size handling of ``--deploy`` for DPT; the benchmark on a tiny input (no timing asserted)."""
    from bindense.export.deploy import FP32_METHOD, deploy_benchmark

    assert deploy_overrides(["model=dpt_vit_s14", "method=reactnet"]) == [
        "model.width=tiny", "model=dpt_vit_s14", "method=reactnet"]  # fmt: skip
    assert deploy_overrides(["method=reactnet"])[:2] == ["model=upernet_convnext", "model.width=tiny"]
    assert deploy_size(deploy_overrides(["model=dpt_vit_s14"]), None) == (476, 476)  # 34 patches of 14
    assert deploy_size(deploy_overrides([]), None) == (480, 480)
    assert deploy_size([], (100, 90)) == (100, 90)
    assert {"linear_activation", "linear_weight", "activation", "weight"} <= set(FP32_METHOD)
    config = _dpt_config(REACTNET)
    twin = build_model(**{k: v for k, v in _dpt_config({**REACTNET, **FP32_METHOD})["model"].items()
                          if k != "_target_"})  # fmt: skip
    assert not any(getattr(m, "is_binary", False) for m in twin.modules())
    result = deploy_benchmark(_dpt(REACTNET), twin, config, size=(60, 56), runs=1, warmup=0)
    assert result["vit_input_hw"] == [56, 56] and result["native_units"] == 25 + 16 + 2
    assert result["unit_max_rel_diff"] < 1e-5
    kinds = {r["kind"] for r in result["profile_summary"]}
    assert "linear (tokens) popcount" in kinds and "transposed 4x4/4 float path" in kinds
    assert any(k.startswith("attention") for k in kinds)
    assert all({"packed_cpu_ms", "fp32_twin_cpu_ms"} <= set(r) for r in result["profile_summary"])


# ------------------------------------------------------------------------------ a trained synthetic checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reactnet", "bidense_g64_output", "bidense"])
def test_trained_synthetic_dpt_argmax_agreement(trained_native_agreement, name: str) -> None:
    """A nano DPT trained briefly on the synthetic scenes: >= 99.9% of pixels keep their class natively."""
    agreement, rel = trained_native_agreement(_dpt_config(DPT_METHODS[name]), 56, 56)
    assert agreement >= 0.999, f"{name}: arg-max agreement {agreement:.5f}"
    assert rel < 1e-2
