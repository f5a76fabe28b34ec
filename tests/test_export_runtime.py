"""``load_packed(path, runtime="native")``: binary convs on the bit-packed kernels, against the unpacked model."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bindense import native
from bindense.export import PackedFormatError, export_packed, load_packed
from bindense.export.deploy import perturb_
from bindense.export.runtime import NativeBinaryConv2d, NativeModel, resident_bytes
from bindense.models import build_model

REACTNET = dict(layout="bnn", activation="rsign", weight="scaled_sign", block_act="prelu", decoder_act="prelu",
                fusion_act="rprelu", bias=False)  # fmt: skip
METHODS: dict[str, dict[str, Any]] = {
    "bidense": dict(layout="bidense"),
    "bidense_g64": dict(layout="bidense", dab_groups=64),
    "bidense_g3": dict(layout="bidense", dab_groups=3),
    "bidense_all": dict(layout="bidense", dab_groups="all"),
    "reactnet": REACTNET,
    "bnn": dict(layout="bnn"),
    "cfb_only": dict(layout="bidense", activation="rsign"),
    "bisrnet": dict(layout="bnn", activation="bisr", weight="scaled_sign", downsample="bisr", bias=False),
    "adabin": dict(
        layout="bnn",
        activation="adabin",
        weight="adabin",
        block_act="maxout",
        decoder_act="maxout",
        fusion_act="maxout",
        bias=False,
    ),  # fmt: skip
}


def _config(method: dict[str, Any]) -> dict[str, Any]:
    model = dict(_target_="bindense.models.build_model", decoder="upernet", backbone="convnext", width="nano",
                 method=method, tasks=["seg"], num_classes=13)  # fmt: skip
    return {"model": model}


def _perturbed(method: dict[str, Any], seed: int = 1) -> nn.Module:
    """A nano UperNet whose parameters and BN statistics are moved away from their init."""
    torch.manual_seed(seed)
    model = build_model(**{k: v for k, v in _config(method)["model"].items() if k != "_target_"})
    return perturb_(model, seed)


def _export(tmp_path: Path, method: dict[str, Any], model: nn.Module | None = None) -> Path:
    path = tmp_path / "m.bdn"
    export_packed(model if model is not None else _perturbed(method), path, config=_config(method))
    return path


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_native_unit_equals_the_unpacked_unit(tmp_path: Path, name: str) -> None:
    """Each binary unit, fed the same input, gives the torch unit's output up to float rounding."""
    path = _export(tmp_path, METHODS[name])
    reference, packed = load_packed(path), load_packed(path, runtime="native")
    assert isinstance(packed, NativeModel)
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    units = {n: m for n, m in packed.model.named_modules() if isinstance(m, NativeBinaryConv2d)}
    assert len(units) >= 25  # every binary conv of the nano UperNet

    def keep(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen.setdefault(name, (inputs[0], output))

        return hook

    hooks = [reference.get_submodule(n).register_forward_hook(keep(n)) for n in units]
    with torch.no_grad():
        reference(torch.randn(2, 3, 64, 80))
        for hook in hooks:
            hook.remove()
        for n, (x, want) in seen.items():
            got = units[n](x.contiguous())
            want = units[n].fused_activation(want)  # the activation after the unit, fused into it
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item(), msg=n)
    assert units["heads.seg.conv"].relu  # the seg head's ReLU is fused (and replaced by nn.Identity)
    assert isinstance(packed.model.heads.seg.act, nn.Identity)


def test_popcount_path_except_depthwise_and_per_channel_dab(tmp_path, monkeypatch) -> None:
    calls = {"binary": 0}
    real = native.binary_conv2d

    def counting(*args, **kwargs):
        calls["binary"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(native, "binary_conv2d", counting)
    x = torch.randn(1, 3, 64, 80)
    for name in ("bidense_g64", "reactnet", "bidense"):
        packed = load_packed(_export(tmp_path, METHODS[name]), runtime="native")
        units = [m for m in packed.modules() if isinstance(m, NativeBinaryConv2d)]
        per_channel = name == "bidense"
        # depthwise: the native sign-depthwise kernel (from the float input)
        assert all(m.sign_depthwise == m.depthwise for m in units)
        assert all(m.float_path == (per_channel and not m.depthwise) for m in units)
        # one copy of the weights each: 1-bit bytes (depthwise), words (float path) or the kernel layout
        assert all((m.w_signs is not None) == m.depthwise for m in units)
        assert all((m.w_bits is not None) == (m.float_path and not m.depthwise) for m in units)
        assert all((m.weights is not None) == (not m.float_path and not m.depthwise) for m in units)
        calls["binary"] = 0
        with torch.no_grad():
            packed(x)
        popcount_units = sum(m.weights is not None for m in units)
        assert calls["binary"] >= popcount_units and (calls["binary"] == 0) == per_channel


@pytest.mark.parametrize("name", ["bidense_g64", "reactnet"])
def test_whole_model_close_and_weights_stay_packed(tmp_path: Path, name: str) -> None:
    path = _export(tmp_path, METHODS[name])
    reference, packed = load_packed(path), load_packed(path, runtime="native")
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        want, got = reference(x)["seg"], packed(x)["seg"]
    assert (got.argmax(1) == want.argmax(1)).float().mean() > 0.999
    binary_weights = sum(u.weight.numel() for u in reference.modules() if getattr(u, "is_binary", False))
    saved = resident_bytes(reference) - resident_bytes(packed)
    assert saved > 0.9 * binary_weights * 4  # the float copies of the 1-bit weights are gone


@pytest.mark.parametrize("isa", ["best", "torch"])
@pytest.mark.parametrize("name", ["bidense_g64", "reactnet", "bidense"])
def test_native_model_holds_each_weight_once(tmp_path: Path, name: str, isa: str) -> None:
    """Resident bytes = parameters and buffers + the kernel layouts; running the model caches no weight copy."""
    path = _export(tmp_path, METHODS[name])
    native.set_isa(None if isa == "best" else isa)
    try:
        reference, packed = load_packed(path), load_packed(path, runtime="native")
        prepared = [m.weights for m in packed.modules() if isinstance(m, NativeBinaryConv2d) and m.weights is not None]
        assert all(w.layout == ("words" if isa == "torch" else native.isa()) for w in prepared)
        assert len(prepared) > 0 or name == "bidense"  # per-channel DAB: every unit on the float path
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                    for t in list(packed.parameters()) + list(packed.buffers())}  # fmt: skip
        assert not {w.data.untyped_storage().data_ptr() for w in prepared} & storages.keys()
        before, cached = resident_bytes(packed), len(native._WEIGHT_CACHE)
        assert before == sum(storages.values()) + sum(w.nbytes for w in prepared)
        x = torch.randn(1, 3, 64, 80)
        with torch.no_grad():
            want, got = reference(x)["seg"], packed(x)["seg"]
        assert len(native._WEIGHT_CACHE) == cached and resident_bytes(packed) == before
        assert (got.argmax(1) == want.argmax(1)).float().mean() > 0.999
    finally:
        native.set_isa(None)


def test_native_state_dict_holds_the_packed_words_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    method = METHODS["bidense_g64"]
    path = _export(tmp_path / "a", method)
    reference, first = load_packed(path), load_packed(path, runtime="native")
    second = load_packed(_export(tmp_path / "b", method, _perturbed(method, seed=2)), runtime="native")
    state = first.model.state_dict()
    units = [n for n, m in first.model.named_modules(remove_duplicate=False)  # shared modules under every name
             if isinstance(m, NativeBinaryConv2d) and not m.depthwise]
    assert units and {k for k in state if k.endswith(".w_bits")} == {f"{n}.w_bits" for n in units}
    for n in units:  # the portable packed words of the file's signs, whatever the ISA layout held
        assert torch.equal(state[f"{n}.w_bits"], native.pack_weights(reference.get_submodule(n).weight.detach()))
    state = first.state_dict()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        want = first(x)["seg"]
        assert not torch.equal(second(x)["seg"], want)
        second.load_state_dict(state)
        torch.testing.assert_close(second(x)["seg"], want, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match=r"Missing key.*w_bits"):
        second.load_state_dict({k: v for k, v in state.items() if not k.endswith("w_bits")})


def test_bad_input_is_refused_with_what_was_expected(tmp_path: Path) -> None:
    packed = load_packed(_export(tmp_path, METHODS["bidense_g64"]), runtime="native")
    x = torch.randn(1, 3, 32, 40)
    with pytest.raises(ValueError, match=r"float32 tensor \[N, 3, H, W\].*got torch.float64"):
        packed(x.double())
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\].*got torch.float32 \[1, 4, 32, 40\]"):
        packed(torch.randn(1, 4, 32, 40))
    with pytest.raises(ValueError, match="contiguous"):
        packed(x.transpose(2, 3))
    unit = next(m for m in packed.modules() if isinstance(m, NativeBinaryConv2d))
    with pytest.raises(ValueError, match=rf"unit .*expected a float32 tensor \[N, {unit.in_channels}, H, W\]"):
        unit(torch.randn(1, unit.in_channels + 1, 8, 8))


def test_export_of_another_format_version_fails_clearly(tmp_path: Path) -> None:
    import hashlib

    path = _export(tmp_path, METHODS["reactnet"])
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, 1)  # the previous format version
    data[-32:] = hashlib.sha256(bytes(data[:-32])).digest()
    path.write_bytes(bytes(data))
    with pytest.raises(PackedFormatError, match=r"format version 1 is not supported.*reads version 2.*re-export"):
        load_packed(path, runtime="native")


def test_unit_descriptor_carries_dab_groups_and_refuses_a_mismatching_model(tmp_path: Path) -> None:
    from bindense.export import read_header

    path = _export(tmp_path, METHODS["bidense_g64"])
    units = [e["unit"] for e in read_header(path)["tensors"] if e.get("kind") == "binary"]
    assert {u["dab_group_size"] for u in units} >= {64} and all(u["activation"] == "DAB" for u in units)
    # groups of 65 give the same parameter shapes as 64 on every nano layer: only the descriptor tells them apart
    method = dict(layout="bidense", dab_groups=65)
    other = build_model(**{k: v for k, v in _config(method)["model"].items() if k != "_target_"})
    with pytest.raises(PackedFormatError, match="does not match the export: dab_group_size is 65, the file expects 64"):
        load_packed(path, model=other, runtime="native")


def test_native_runtime_rejects_other_devices_and_kernels(tmp_path: Path) -> None:
    path = _export(tmp_path, METHODS["reactnet"])
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_packed(path, runtime="onnx")
    with pytest.raises(ValueError, match="CPU"):
        load_packed(path, runtime="native", kernel="gemm")


# ------------------------------------------------------------------------------ a trained synthetic checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bidense_g64", "bidense", "reactnet"])
def test_trained_synthetic_model_argmax_agreement(trained_native_agreement, name: str) -> None:
    """A nano UperNet trained briefly on the synthetic scenes: >= 99.9% of pixels keep their class."""
    agreement, rel = trained_native_agreement(_config(METHODS[name]), 64, 80)
    assert agreement >= 0.999, f"{name}: arg-max agreement {agreement:.5f}"
    assert rel < 1e-2


@pytest.mark.parametrize("shape", [(5, 70, 3, 3), (8, 128, 1, 1), (3, 1, 7, 7)])
def test_unpack_words_equals_the_native_oracle(shape: tuple[int, ...]) -> None:
    from bindense.export.runtime import unpack_words

    w = torch.randn(shape)
    words = native.pack_weights(w)
    assert torch.equal(unpack_words(words, shape[1]), native.unpack_weights(words, shape[1]))


def test_time_pair_reports_wall_and_cpu_medians() -> None:
    """The deploy benchmark's timing keys (values are not asserted: no timings in tests)."""
    from bindense.export.deploy import time_pair

    calls = {"a": 0, "b": 0}

    class Count(nn.Module):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls[self.key] += 1
            return x

    out = time_pair(Count("a"), Count("b"), torch.zeros(1), runs=3, warmup=1)
    assert calls == {"a": 4, "b": 4}  # interleaved, warm-up included
    assert {"packed_ms", "fp32_twin_ms", "speedup_vs_fp32_twin", "packed_cpu_ms", "fp32_twin_cpu_ms",
            "speedup_cpu"} <= set(out)


def test_fused_block_activations_and_handed_over_plane_sums(tmp_path: Path, monkeypatch) -> None:
    """BiDense G=64: each block's LearnableBias -> PReLU is fused into its pwconv1 (the act becomes nn.Identity);
    every native unit's output carries the float64 sums of its planes, and the next DAB thresholds use them."""
    import bindense.export.inputs as inputs
    import bindense.export.runtime as runtime
    from bindense.models.convnext import BiDenseBlock

    packed = load_packed(_export(tmp_path, METHODS["bidense_g64"]), runtime="native")
    blocks = [m for m in packed.modules() if isinstance(m, BiDenseBlock)]
    assert blocks and all(isinstance(b.act, nn.Identity) and b.pwconv1.act_slope is not None for b in blocks)
    outputs: list[torch.Tensor] = []
    units = [m for m in packed.modules() if isinstance(m, NativeBinaryConv2d)]
    hooks = [u.register_forward_hook(lambda m, i, o: outputs.append(o)) for u in units]
    handed = []
    real = inputs.dab_threshold

    def counting(dab, x):
        handed.append(getattr(x, inputs.CHANNEL_SUMS, None) is not None)
        return real(dab, x)

    monkeypatch.setattr(inputs, "dab_threshold", counting)
    monkeypatch.setattr(runtime, "dab_threshold", counting)
    with torch.no_grad():
        packed(torch.randn(1, 3, 64, 80))
    for h in hooks:
        h.remove()
    assert all(u.emit_sums for u in units) and len(outputs) >= len(units)  # a shared unit runs several times
    for y in outputs:
        sums = getattr(y, inputs.CHANNEL_SUMS)
        torch.testing.assert_close(sums, y.double().sum(dim=(2, 3)), rtol=1e-6, atol=1e-6)
    assert sum(handed) >= 2 * len(blocks)  # pwconv1 and pwconv2 of every block at least
