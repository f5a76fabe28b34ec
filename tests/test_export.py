"""Bit-packed export (.bdn): exact reload, integrity checks, checkpoint adapter, packed binary kernels."""

from __future__ import annotations

import copy
import importlib.util
import struct
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from bindense.binary import BinaryConv2d, BinaryConvTranspose2d, BinaryLinear, LearnableBias
from bindense.export import (
    MAGIC,
    PackedBinaryConv2d,
    PackedFormatError,
    PackedWeight,
    decode_binary_weight,
    encode_binary_weight,
    export_packed,
    load_packed,
    pack_signs,
    pack_words,
    popcount,
    read_container,
    read_header,
    unpack_signs,
)
from bindense.export.container import write_container
from bindense.export.deploy import perturb_
from bindense.utils.checkpoint import CheckpointError, load_checkpoint_model

REPO = Path(__file__).resolve().parents[1]


class Mixed(nn.Module):
    """Every kind of binary unit and encoding, a shared (tied) unit, BN, fp layers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dab = BinaryConv2d(8, 8, 3, padding=1, activation="dab", weight="scaled_sign", bypass="cfb")
        self.dw = BinaryConv2d(8, 8, 3, padding=1, groups=8, activation="dab", weight="scaled_sign")
        self.down = BinaryConv2d(8, 16, 2, stride=2, activation="dab", weight="scaled_sign", bypass="cfb")
        self.ada = BinaryConv2d(16, 16, 3, padding=1, activation="adabin", weight="adabin", bypass="none")
        self.bnn = BinaryConv2d(16, 16, 1, activation="sign", weight="sign", bias=True, norm=False, bypass="none")
        self.shared = BinaryConv2d(16, 16, 3, padding=1, activation="rsign", weight="scaled_sign")
        self.tied = nn.ModuleList([self.shared, self.shared])
        self.bias = LearnableBias(16)
        self.up = BinaryConvTranspose2d(16, 8, 2, stride=2, activation="dab", weight="scaled_sign")
        self.lin = BinaryLinear(8, 8, activation="rsign", weight="centered_sign")
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.down(self.dw(self.dab(self.stem(x))))
        x = self.bnn(self.ada(x))
        for m in self.tied:
            x = m(x)
        x = self.up(self.bias(x))
        x = self.lin(x.movedim(1, -1)).movedim(-1, 1)
        return {"seg": self.head(x)}


def _trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb parameters and BN statistics away from their init (so that every stored value matters)."""
    return perturb_(model, seed)


@pytest.fixture
def mixed() -> Mixed:
    torch.manual_seed(0)
    return _trained_like(Mixed())


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)["seg"]


# ------------------------------------------------------------------------------------------------ bits


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (3, 5, 3, 3), (16, 8, 1, 1)])
def test_pack_unpack_signs_roundtrip(shape: tuple[int, ...]) -> None:
    signs = torch.rand(shape) > 0.5
    packed = pack_signs(signs)
    assert packed.dtype == torch.uint8 and packed.numel() == (signs.numel() + 7) // 8
    assert torch.equal(unpack_signs(packed, shape), signs)


def test_pack_signs_bit_order() -> None:
    assert pack_signs(torch.tensor([True, False, False, False, False, False, False, False, False, True])).tolist() == [
        1,
        2,
    ]


@pytest.mark.parametrize("width", [1, 2, 3, 4, 8, 9, 16, 25, 33, 49, 63])
def test_popcount(width: int) -> None:
    bits = torch.rand(200, width) > 0.5
    words = pack_words(bits)
    assert torch.equal(popcount(words, width), bits.sum(dim=1))
    assert torch.equal(popcount(words), bits.sum(dim=1))  # all steps of the word's dtype
    wide = pack_words(bits, torch.int64)
    assert torch.equal(popcount(wide, width), bits.sum(dim=1)) and torch.equal(popcount(wide), bits.sum(dim=1))


# -------------------------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("weight", ["sign", "scaled_sign", "adabin", "centered_sign"])
@pytest.mark.parametrize("channel_dim", [0, 1])
def test_encode_decode_exact(weight: str, channel_dim: int) -> None:
    from bindense.binary import make_weight

    w = torch.randn(6, 4, 3, 3) * 0.5
    w[2] = 0.0  # a zero row: scale 0, AdaBin alpha 0
    binarizer = make_weight(weight, channel_dim=channel_dim)
    if weight == "adabin":
        w[2] = 0.3  # AdaBin needs a spread per channel
        w[2, 0, 0, 0] = 0.1
    with torch.no_grad():
        wb = binarizer(w)
    encoding, parts = encode_binary_weight(wb, channel_dim)
    expected = {"sign": "sign", "scaled_sign": "scaled_sign", "centered_sign": "scaled_sign", "adabin": "two_level"}
    assert encoding == expected[weight]
    decoded = decode_binary_weight(encoding, parts, list(wb.shape), channel_dim, wb.dtype)
    assert torch.equal(decoded, wb)
    assert parts["signs"].numel() == (wb.numel() + 7) // 8


def test_encode_rejects_non_binary() -> None:
    with pytest.raises(ValueError, match="not a binary weight"):
        encode_binary_weight(torch.randn(4, 3, 3, 3), 0)


# ------------------------------------------------------------------------------------------- roundtrip


def test_export_load_exact(tmp_path: Path, mixed: Mixed) -> None:
    x = torch.randn(2, 3, 16, 16)
    ref = _outputs(mixed, x)
    info = export_packed(mixed, tmp_path / "m.bdn")
    loaded = load_packed(tmp_path / "m.bdn", model=Mixed())
    assert torch.equal(_outputs(loaded, x), ref)
    assert info["aliases"] > 0  # the tied unit is stored once
    assert info["binary_weights"] == 8
    header = read_header(tmp_path / "m.bdn")
    encodings = {e["name"]: e["encoding"] for e in header["tensors"] if e.get("kind") == "binary"}
    assert encodings["ada.weight"] == "two_level" and encodings["bnn.weight"] == "sign"
    assert encodings["dab.weight"] == "scaled_sign" and encodings["up.weight"] == "scaled_sign"
    assert isinstance(loaded.dab.weight_binarizer, PackedWeight) and loaded.dab.weight_bits == 1
    assert loaded.tied[0] is loaded.tied[1]


def test_float16_storage_is_smaller_and_close(tmp_path: Path, mixed: Mixed) -> None:
    x = torch.randn(2, 3, 16, 16)
    a = export_packed(mixed, tmp_path / "a.bdn")
    b = export_packed(mixed, tmp_path / "b.bdn", float_dtype="float16")
    assert b["bytes"] < a["bytes"]
    loaded = load_packed(tmp_path / "b.bdn", model=Mixed())
    assert loaded.stem.weight.dtype == torch.float32
    with torch.no_grad():  # the binary weights are still exact; only fp entries are rounded
        assert torch.equal(loaded.dab.binary_weight(), mixed.dab.binary_weight())
    assert _outputs(loaded, x).shape == _outputs(mixed, x).shape


def _bidense_config(width: str = "nano") -> dict:
    method = yaml.safe_load((REPO / "conf" / "method" / "bidense.yaml").read_text())
    return {
        "model": {
            "_target_": "bindense.models.build_model",
            "decoder": "upernet",
            "backbone": "convnext",
            "width": width,
            "method": method,
            "tasks": ["seg", "depth"],
            "num_classes": 7,
            "max_depth": 10.0,
        }
    }


def _unit_config() -> dict:
    """A config whose model is one BiDense unit (cheap stand-in for the checkpoint plumbing tests)."""
    return {
        "model": {
            "_target_": "bindense.binary.BinaryConv2d",
            "in_channels": 3,
            "out_channels": 8,
            "kernel_size": 3,
            "padding": 1,
            "activation": "dab",
            "weight": "scaled_sign",
        }
    }


def test_bidense_model_from_header_config_and_packed_kernels(tmp_path: Path) -> None:
    """The real BiDense UperNet: rebuilt from the header config with identical outputs; the gemm kernel path
    gives the same predictions (float summation order differs, so values agree to float tolerance)."""
    from bindense.export import build_model_from_config

    config = _bidense_config()
    torch.manual_seed(0)
    model = _trained_like(build_model_from_config(config))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    export_packed(model, tmp_path / "m.bdn", config=config)
    loaded = load_packed(tmp_path / "m.bdn")  # the model comes from the header's config
    with torch.no_grad():
        out = loaded(x)
    assert out.keys() == ref.keys()
    for k in ref:
        assert torch.equal(out[k], ref[k]), k
    packed = load_packed(tmp_path / "m.bdn", kernel="gemm")
    assert any(isinstance(m, PackedBinaryConv2d) for m in packed.modules())
    assert not any(PackedBinaryConv2d.supports(m, "scaled_sign") for m in packed.modules())
    with torch.no_grad():
        out = packed(x)["seg"]
    assert (out.argmax(1) == ref["seg"].argmax(1)).float().mean() > 0.99
    torch.testing.assert_close(out, ref["seg"], rtol=1e-3, atol=1e-3)


def test_header_target_outside_allowlist_is_refused(tmp_path: Path, mixed: Mixed) -> None:
    export_packed(mixed, tmp_path / "m.bdn", config={"model": {"_target_": "os.system", "command": "true"}})
    with pytest.raises(PackedFormatError, match="outside"):
        load_packed(tmp_path / "m.bdn")


def test_model_mismatch_is_reported(tmp_path: Path, mixed: Mixed) -> None:
    export_packed(mixed, tmp_path / "m.bdn")
    with pytest.raises(PackedFormatError, match="do not match"):
        load_packed(tmp_path / "m.bdn", model=nn.Sequential(nn.Conv2d(3, 8, 3)))


# ------------------------------------------------------------------------------------------- integrity


@pytest.fixture
def packed_file(tmp_path: Path, mixed: Mixed) -> Path:
    path = tmp_path / "m.bdn"
    export_packed(mixed, path)
    return path


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_file_fails(packed_file: Path, keep: float) -> None:
    data = packed_file.read_bytes()
    packed_file.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(PackedFormatError, match="checksum.*truncated"):
        load_packed(packed_file, model=Mixed())


def test_tiny_truncation_fails(packed_file: Path) -> None:
    packed_file.write_bytes(packed_file.read_bytes()[:20])
    with pytest.raises(PackedFormatError, match="truncated"):
        read_container(packed_file)


@pytest.mark.parametrize("where", ["header", "payload", "digest"])
def test_tampered_file_fails(packed_file: Path, where: str) -> None:
    data = bytearray(packed_file.read_bytes())
    position = {"header": 40, "payload": len(data) - 200, "digest": len(data) - 1}[where]
    data[position] ^= 0x01
    packed_file.write_bytes(bytes(data))
    with pytest.raises(PackedFormatError, match="checksum"):
        load_packed(packed_file, model=Mixed())


def test_not_a_bdn_file(tmp_path: Path) -> None:
    path = tmp_path / "x.bdn"
    torch.save({"a": torch.ones(3)}, path)
    with pytest.raises(PackedFormatError, match="magic"):
        read_container(path)


def test_unsupported_version(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "v.bdn"
    write_container(path, {"format": "bindense-packed"}, {"a": torch.ones(3)})
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, 99)
    data[-32:] = hashlib.sha256(bytes(data[:-32])).digest()  # a consistent file of a future version
    path.write_bytes(bytes(data))
    with pytest.raises(PackedFormatError, match="version 99"):
        read_container(path)


def test_container_roundtrip_dtypes(tmp_path: Path) -> None:
    arrays = {
        "f32": torch.randn(3, 4),
        "f16": torch.randn(5).half(),
        "i64": torch.tensor(7),
        "u8": torch.arange(9, dtype=torch.uint8),
        "b": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
    }
    write_container(tmp_path / "c.bdn", {"hello": [1, 2]}, arrays)
    assert (tmp_path / "c.bdn").read_bytes()[:8] == MAGIC
    header, out = read_container(tmp_path / "c.bdn")
    assert header["hello"] == [1, 2]
    for k, v in arrays.items():
        assert out[k].dtype == v.dtype and torch.equal(out[k], v), k


# ------------------------------------------------------------------------------------------ checkpoints


def _fake_lightning_ckpt(model: nn.Module, path: Path, config: dict | None) -> None:
    ckpt = {"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}, "epoch": 1}
    if config is not None:
        ckpt["bindense_config"] = config
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)


@pytest.mark.parametrize("config_in", ["checkpoint", "run_dir", "hydra_dir"])
def test_checkpoint_adapter(tmp_path: Path, config_in: str) -> None:
    from bindense.export import build_model_from_config

    config = _unit_config()
    torch.manual_seed(1)
    model = _trained_like(build_model_from_config(config))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    _fake_lightning_ckpt(model, ckpt, config if config_in == "checkpoint" else None)
    if config_in == "run_dir":
        (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(config))
    if config_in == "hydra_dir":  # unresolved, with interpolations, as Hydra writes it
        raw = {"width": 8, "model": {**config["model"], "out_channels": "${width}"}, "paths": {"x": "${hydra:y}"}}
        (tmp_path / "run" / ".hydra").mkdir()
        (tmp_path / "run" / ".hydra" / "config.yaml").write_text(yaml.safe_dump(raw))
    rebuilt, cfg = load_checkpoint_model(ckpt)
    assert cfg["model"]["out_channels"] == 8
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))


def test_checkpoint_without_config_fails_clearly(tmp_path: Path, mixed: Mixed) -> None:
    ckpt = tmp_path / "lonely.ckpt"
    _fake_lightning_ckpt(mixed, ckpt, None)
    with pytest.raises(CheckpointError, match="no run config"):
        load_checkpoint_model(ckpt)


def _export_script():
    spec = importlib.util.spec_from_file_location("export_script", REPO / "scripts" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_script_from_checkpoint(tmp_path: Path) -> None:
    from bindense.export import build_model_from_config

    config = _unit_config()
    torch.manual_seed(2)
    model = _trained_like(build_model_from_config(config))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    _fake_lightning_ckpt(model, ckpt, config)
    summary = _export_script().main([f"ckpt_path={ckpt}", f"out={tmp_path / 'm.bdn'}"])
    assert summary["verify_identical"] is True
    assert summary["binary_elements"] == 8 * 3 * 3 * 3
    assert read_header(tmp_path / "m.bdn")["metadata"]["ckpt_path"] == str(ckpt.resolve())


# ------------------------------------------------------------------------------------- packed kernels


GEOMETRIES = [
    dict(in_channels=8, out_channels=12, kernel_size=3, padding=1),
    dict(in_channels=8, out_channels=8, kernel_size=7, padding=3, groups=8),  # depthwise 7x7
    dict(in_channels=8, out_channels=16, kernel_size=2, stride=2),  # BiDense transition
    dict(in_channels=12, out_channels=6, kernel_size=1, bias=True),
    dict(in_channels=8, out_channels=8, kernel_size=3, stride=2, padding=1, groups=2),
    dict(in_channels=6, out_channels=6, kernel_size=3, padding=2, dilation=2),
]


@pytest.mark.parametrize("kernel", ["gemm", "xnor"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join(f"{k[:3]}{v}" for k, v in g.items()))
@pytest.mark.parametrize("bypass", ["cfb", "none"])
def test_packed_conv_matches_fake_quantised(kernel: str, geometry: dict, bypass: str) -> None:
    torch.manual_seed(0)
    unit = BinaryConv2d(**geometry, activation="dab", weight="scaled_sign", bypass=bypass)
    _trained_like_unit(unit)
    x = torch.randn(2, geometry["in_channels"], 11, 13) * 2 + 0.3
    with torch.no_grad():
        ref = unit(x)
        wb = unit.binary_weight()
        encoding, parts = encode_binary_weight(wb, 0)
        packed = PackedBinaryConv2d.from_unit(unit, parts["signs"], parts["scale"], kernel).eval()
        out = packed(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def _trained_like_unit(unit: BinaryConv2d) -> None:
    with torch.no_grad():
        unit.weight.normal_(0, 0.3)
        unit.activation_binarizer.a.normal_(0, 0.5)
        unit.activation_binarizer.k.normal_(0, 0.5)
        unit.activation_binarizer.b.normal_(0, 0.2)
        if unit.norm is not None:
            unit.norm.running_mean.normal_(0, 0.1)
            unit.norm.running_var.uniform_(0.5, 2.0)
            unit.norm.weight.normal_(1, 0.1)
    unit.eval()


def test_load_packed_rejects_unknown_kernel(packed_file: Path) -> None:
    with pytest.raises(ValueError, match="kernel"):
        load_packed(packed_file, model=Mixed(), kernel="fast")


def test_copy_of_loaded_model_is_independent(packed_file: Path) -> None:
    loaded = load_packed(packed_file, model=Mixed())
    clone = copy.deepcopy(loaded)
    assert torch.equal(clone.dab.weight, loaded.dab.weight)


@pytest.mark.parametrize("method", sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml")))
@pytest.mark.parametrize("decoder", ["upernet", "dpt"])
def test_every_method_exports_exactly(tmp_path: Path, method: str, decoder: str) -> None:
    from bindense.export import build_model_from_config

    config = _bidense_config()
    config["model"]["method"] = yaml.safe_load((REPO / "conf" / "method" / f"{method}.yaml").read_text())
    if decoder == "dpt":
        config["model"].update(decoder="dpt", backbone="vit")
    torch.manual_seed(0)
    model = _trained_like(build_model_from_config(config))
    x = torch.randn(1, 3, 56, 56) if decoder == "dpt" else torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    export_packed(model, tmp_path / "m.bdn", config=config)
    with torch.no_grad():
        out = load_packed(tmp_path / "m.bdn")(x)
    for k in ref:
        assert torch.equal(out[k], ref[k]), k
