"""Layouts against docs/ARCHITECTURES.md: Table 1 parameter counts, per-block counts, FPN wiring, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from bindense.analysis.complexity import paper_rule_params
from bindense.binary import cfb
from bindense.models import MethodSpec, build_model
from bindense.models.convnext import BiDenseBlock, BiSRDown, BNNBlock, OriginalBlock

CONF = Path(__file__).resolve().parents[1] / "conf"


def spec(name: str) -> MethodSpec:
    return MethodSpec.from_config(OmegaConf.load(CONF / "method" / f"{name}.yaml"))


def tiny_upernet(name: str) -> nn.Module:
    with torch.device("meta"):  # 40 M parameters: shapes only
        return build_model("upernet", "convnext", "tiny", spec(name), ["seg"], num_classes=151)


@pytest.mark.parametrize(
    "name,paper,honest",
    [
        ("fp32", 40_020_158, 40_020_158),  # Table 1 "ConvNeXt*" 40,020K
        ("fp32_scratch", 40_022_981, 40_022_981),  # Table 1 "ConvNeXt" 40,023K (docs/ARCHITECTURES.md#43-fp32_scratch)
        ("bidense", 1_625_946, 1_625_946 + 18_724),  # Table 1 BiDense 1,626K; honest: final conv fp
    ],
)
def test_table1_param_counts(name: str, paper: int, honest: int) -> None:
    got_paper, got_honest = paper_rule_params(tiny_upernet(name))
    assert got_paper == pytest.approx(paper, abs=0.5)
    assert got_honest == pytest.approx(honest, abs=0.5)


def fp_state(module: nn.Module) -> tuple[int, int]:
    """(full-precision, binary) state-dict elements of a module, as the paper rule sees them."""
    fp = binary = 0
    for _, m in module.named_modules(remove_duplicate=False):
        for n, t in [*m._parameters.items(), *m._buffers.items()]:
            if t is None:
                continue
            if getattr(m, "weight_bits", 32) == 1 and n == "weight":
                binary += t.numel()
            else:
                fp += t.numel()
    return fp, binary


@pytest.mark.parametrize(
    "name,block_cls,fp_formula",
    [
        ("bnn", BNNBlock, lambda d: 30 * d + 3),  # biases d + 4d + d, BN 4d+1 + 16d+1 + 4d+1
        # docs/ARCHITECTURES.md#45-reactnet (move d + d + 4d, LB+PReLU 8d)
        ("reactnet", BNNBlock, lambda d: 38 * d + 3),
        ("adabin", BNNBlock, lambda d: 32 * d + 9),  # docs/ARCHITECTURES.md#46-adabin
        ("bisrnet", BNNBlock, lambda d: 44 * d + 6),  # binarizer 2Cin+1 per conv
        ("cfb_only", BiDenseBlock, lambda d: 38 * d + 3),  # docs/ARCHITECTURES.md#48-cfb
        ("bidense", BiDenseBlock, lambda d: 50 * d + 3),  # DAB 3Cin per unit (docs/ARCHITECTURES.md#37-bidense-unit)
        ("fp32", OriginalBlock, lambda d: 8 * d * d + 58 * d),  # docs/ARCHITECTURES.md#41-fp32
    ],
)
def test_block_counts(name: str, block_cls: type, fp_formula) -> None:
    d = 8
    dims = [d, 2 * d, 4 * d, 8 * d]
    model = build_model("upernet", "convnext", "nano", spec(name), ["seg"], num_classes=3, dims=dims)
    block = model.backbone.stages[0][0]
    assert type(block) is block_cls
    fp, binary = fp_state(block)
    assert fp == fp_formula(d)
    assert binary == (0 if name == "fp32" else 8 * d * d + 49 * d)


def test_bisr_downsampler() -> None:
    c = 8
    down = BiSRDown(spec("bisrnet"), c)
    assert fp_state(down) == (10 * c + 2, 18 * c * c)  # docs/ARCHITECTURES.md#34-bisr-unit-and-down-sampler
    x = torch.randn(2, c, 6, 6)
    assert down(x).shape == (2, 2 * c, 3, 3)


def test_bidense_transition_is_unit_plus_pooled_tiling() -> None:
    model = build_model("upernet", "convnext", "nano", "bidense", ["seg"], num_classes=3).eval()
    down = model.backbone.downsample_layers[1][0]
    x = torch.randn(2, 24, 8, 8)
    with torch.no_grad():
        plain = down.norm(down._conv_forward(down.activation_binarizer(x), down.binary_weight(), None))
        assert torch.allclose(down(x), plain + cfb(F.avg_pool2d(x, 2), 48), atol=1e-6)


def test_shared_smoothing_module() -> None:
    model = build_model("upernet", "convnext", "nano", "bidense", ["seg"], num_classes=3)
    smooth = model.decoder.smooth
    assert smooth[0] is smooth[1] is smooth[2]
    keys = [k for k in model.state_dict() if k.startswith("decoder.smooth.")]
    assert {k.split(".")[2] for k in keys} == {"0", "1", "2"}  # state_dict lists it per position
    names = [n for n, _ in model.named_parameters() if n.startswith("decoder.smooth.")]
    assert all(n.startswith("decoder.smooth.0.") for n in names)  # parameters() once


@pytest.mark.parametrize("name", ["bidense", "reactnet", "fp32"])
def test_fpn_top_down_is_not_cascaded(name: str) -> None:
    """M_i = up(L_{i+1}) + L_i from the laterals; the fusion takes [S1, S2, S3, L4] with the raw L4."""
    torch.manual_seed(0)
    model = build_model("upernet", "convnext", "nano", spec(name), ["seg"], num_classes=3).eval()
    dec = model.decoder
    seen: dict[str, list[torch.Tensor]] = {"lat": [], "smooth_in": [], "smooth_out": [], "fusion_in": []}
    hooks = [m.register_forward_hook(lambda mod, i, o: seen["lat"].append(o)) for m in dec.laterals]
    hooks.append(
        dec.smooth[0].register_forward_hook(
            lambda mod, i, o: (seen["smooth_in"].append(i[0]), seen["smooth_out"].append(o)) and None
        )
    )
    hooks.append(dec.fusion[0].register_forward_hook(lambda mod, i, o: seen["fusion_in"].append(i[0])))
    with torch.no_grad():
        _, feats = model(torch.randn(2, 3, 64, 64), return_features=True)
    for h in hooks:
        h.remove()

    def up(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=True)

    l2, l3, l4 = seen["lat"]
    l1 = feats["backbone.stage1"]
    m3, m2, m1 = seen["smooth_in"]
    assert len(seen["smooth_in"]) == 3
    assert torch.allclose(m3, up(l4, l3) + l3, atol=1e-6)
    assert torch.allclose(m2, up(l3, l2) + l2, atol=1e-6)  # not up(m3) + l2
    assert torch.allclose(m1, up(l2, l1) + l1, atol=1e-6)
    s3, s2, s1 = seen["smooth_out"]
    if MethodSpec.from_config(spec(name)).smooth_residual:
        s3, s2, s1 = s3 + m3, s2 + m2, s1 + m1
    (fusion_in,) = seen["fusion_in"]
    expected = torch.cat([s1, up(s2, s1), up(s3, s1), up(l4, s1)], dim=1)
    assert torch.allclose(fusion_in, expected, atol=1e-6)


def test_layout_switches() -> None:
    assert spec("fp32").original_backbone and not spec("fp32").fpn_norm and not spec("fp32").smooth_residual
    assert spec("fp32_scratch").fpn_norm and spec("fp32_scratch").smooth_residual
    assert spec("bnn").smooth_residual and spec("bnn").bias
    assert not spec("bidense").smooth_residual and not spec("bidense").bias


def test_official_convnext_keys_and_checkpoint(tmp_path: Path) -> None:
    model = build_model("upernet", "convnext", "nano", spec("fp32"), ["seg"], num_classes=3)
    sd = model.backbone.state_dict()
    for key in (
        "downsample_layers.0.0.weight",
        "downsample_layers.0.1.weight",
        "downsample_layers.1.0.bias",
        "downsample_layers.1.1.weight",
        "stages.0.0.gamma",
        "stages.0.0.dwconv.weight",
        "stages.0.0.norm.weight",
        "stages.3.0.pwconv2.bias",
    ):
        assert key in sd
    assert sd["stages.0.0.pwconv1.weight"].shape == (96, 24)  # Linear layout, as in the official release
    official = {k: torch.randn_like(v) for k, v in sd.items()}
    official.update(
        {
            "norm.weight": torch.ones(192),
            "norm.bias": torch.zeros(192),
            "head.weight": torch.zeros(9, 192),
            "head.bias": torch.zeros(9),
        }
    )
    path = tmp_path / "convnext_nano.pth"
    torch.save({"model": official}, path)
    loaded = build_model("upernet", "convnext", "nano", spec("fp32"), ["seg"], num_classes=3, pretrained_ckpt=str(path))
    for k, v in loaded.backbone.state_dict().items():
        assert torch.equal(v, official[k])

    with pytest.raises(FileNotFoundError, match="never downloads"):
        build_model(
            "upernet",
            "convnext",
            "nano",
            spec("fp32"),
            ["seg"],
            num_classes=3,
            pretrained_ckpt=str(tmp_path / "missing.pth"),
        )
    with pytest.raises(ValueError, match="original"):
        build_model("upernet", "convnext", "nano", spec("bidense"), ["seg"], num_classes=3, pretrained_ckpt=str(path))
    with pytest.raises(RuntimeError, match="does not match"):
        build_model(
            "upernet",
            "convnext",
            "nano",
            spec("fp32"),
            ["seg"],
            num_classes=3,
            pretrained_ckpt=str(path),
            dims=[32, 64, 128, 256],
        )


@pytest.mark.parametrize(
    "name", ["bidense", "cfb_only", "bnn", "reactnet", "adabin", "bisrnet", "fp32", "fp32_scratch"]
)
def test_block_data_path(name: str) -> None:
    """The block computes exactly its layout's formula from its units (hooked), e.g. no residual for BiDense."""
    torch.manual_seed(0)
    model = build_model("upernet", "convnext", "nano", spec(name), ["seg"], num_classes=3).eval()
    block = model.backbone.stages[1][0]
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    units = ("dwconv", "pwconv1", "act", "pwconv2")
    hooks = [
        getattr(block, u).register_forward_hook(lambda m, i, o, u=u: seen.__setitem__(u, (i[0], o))) for u in units
    ]
    hooks.append(block.register_forward_hook(lambda m, i, o: seen.__setitem__("block", (i[0], o))))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    for h in hooks:
        h.remove()
    x, out = seen["block"]
    assert torch.equal(seen["dwconv"][0], x)
    assert torch.equal(seen["act"][0], seen["pwconv1"][1])
    assert torch.equal(seen["pwconv2"][0], seen["act"][1])
    dw, pw2 = seen["dwconv"][1], seen["pwconv2"][1]
    if isinstance(block, OriginalBlock):  # x + gamma * pw2(GELU(pw1(LN(dw(x)))))
        ln = F.layer_norm(dw.permute(0, 2, 3, 1), (dw.shape[1],), block.norm.weight, block.norm.bias, 1e-6)
        assert torch.equal(seen["pwconv1"][0], ln)
        torch.testing.assert_close(out, x + (block.gamma * pw2).permute(0, 3, 1, 2), rtol=0, atol=0)
    elif isinstance(block, BiDenseBlock):  # pw2(act(pw1(dw(x)))): no block residual
        assert torch.equal(seen["pwconv1"][0], dw)
        assert torch.equal(out, pw2)
    else:  # BNN-shaped: y = x + dw(x); x + pw2(act(pw1(y)))
        assert type(block) is BNNBlock
        assert torch.equal(seen["pwconv1"][0], x + dw)
        assert torch.equal(out, x + pw2)


def test_layout_fields_of_the_shipped_layouts() -> None:
    """Each layout preset sets every layout field explicitly; presets on a layout inherit them from it."""
    want = {  # original_backbone, block_residual, fpn_norm, smooth_residual
        "bidense": (False, False, True, False),
        "bnn": (False, True, True, True),
        "fp32": (True, True, False, False),
        "fp32_scratch": (True, True, True, True),
    }
    for name, values in want.items():
        s = spec(name)
        assert (s.original_backbone, s.block_residual, s.fpn_norm, s.smooth_residual) == values, name
    for preset, layout in [("reactnet", "bnn"), ("adabin", "bnn"), ("bisrnet", "bnn"), ("cfb_only", "bidense")]:
        s, base = spec(preset), spec(layout)
        assert (s.original_backbone, s.block_residual, s.fpn_norm, s.smooth_residual) == want[layout], preset
        assert s.layout == base.layout and s.name == preset


def test_a_new_layout_is_a_yaml(tmp_path: Path) -> None:
    """A layout preset under a new name builds the same model as the one it copies: no module reads the name."""
    text = (CONF / "method" / "bnn.yaml").read_text().replace("layout: bnn", "layout: my_layout")
    (tmp_path / "my_layout.yaml").write_text(text.replace("name: bnn", "name: my_layout"))
    (tmp_path / "bidense.yaml").write_text((CONF / "method" / "bidense.yaml").read_text())  # the root preset
    mine = MethodSpec.from_config({"layout": "my_layout", "activation": "rsign"}, presets=tmp_path)
    assert mine.layout == "my_layout" and mine.block_residual and mine.smooth_residual
    x = torch.randn(1, 3, 64, 64)
    outputs = []
    for s in (mine, MethodSpec.from_config({"layout": "bnn", "activation": "rsign"})):
        torch.manual_seed(0)
        model = build_model("upernet", "convnext", "nano", s, ["seg"], num_classes=3).eval()
        with torch.no_grad():
            outputs.append(model(x)["seg"])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_layout_must_name_a_layout_preset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="method preset 'nope' not found.*presets: \\[.*'bnn'"):
        MethodSpec.from_config({"layout": "nope"})
    with pytest.raises(ValueError, match="reactnet.yaml is a preset on layout 'bnn', not a layout"):
        MethodSpec.from_config({"layout": "reactnet"})
    with pytest.raises(ValueError, match="original_backbone=true needs method.block_residual=true"):
        MethodSpec.from_config({"layout": "fp32", "block_residual": False})


def test_shipped_presets_need_no_python_defaults() -> None:
    """Every preset resolves; the BiDense defaults live only in bidense.yaml (the dataclass has none)."""
    from dataclasses import MISSING, fields

    assert all(f.default is MISSING for f in fields(MethodSpec))
    for path in sorted((CONF / "method").glob("*.yaml")):
        assert MethodSpec.from_config(path.stem).name == path.stem


def test_complete_method_config_needs_no_preset_files(tmp_path):
    """A resolved method config (a run's or an export's) builds its spec without reading conf/method/."""
    from dataclasses import asdict

    from bindense.models.spec import MethodSpec

    spec = MethodSpec.from_config("bnn")
    assert MethodSpec.from_config(asdict(spec), presets=tmp_path) == spec
    with pytest.raises(ValueError, match="not found"):
        MethodSpec.from_config({"layout": "bnn"}, presets=tmp_path)
