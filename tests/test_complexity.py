"""Complexity accounting on hand-built layers with hand-computed numbers, plus the paper-size models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from bindense.analysis.complexity import paper_rule_params, summarize
from bindense.binary import BinaryConv2d, BinaryConvTranspose2d
from bindense.models import PredictionConv, build_model
from bindense.models.spec import MethodSpec
from bindense.models.vit import ViT

ROOT = Path(__file__).resolve().parents[1]


def hand_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # fp: 4*3*9 + 4 = 112 params; 8*8*4 outputs x 27 = 6,912 MACs
        # DAB (3*4 = 12 fp) + BN (16 weight/bias fp + 17 buffers); binary 8*4*9 = 288; 8*8*8 x 36 = 18,432 BOPs
        BinaryConv2d(4, 8, 3, padding=1, activation="dab", weight="scaled_sign", bypass="cfb"),
        # groups 2: binary 8*4*9 = 288, bias 8 fp; 512 outputs x 36 = 18,432 BOPs
        BinaryConv2d(
            8, 8, 3, padding=1, groups=2, bias=True, activation="sign", weight="sign", bypass="none", norm=False
        ),
        # transposed k2 s2: binary 8*4*4 = 128, RSign 8 fp; 512 inputs x 4*2*2 = 8,192 BOPs -> (4, 16, 16)
        BinaryConvTranspose2d(8, 4, 2, stride=2, activation="rsign", weight="scaled_sign", bypass="none", norm=False),
        # 1-bit weights on fp inputs: a FLOP, not a BOP; binary 4*4 = 16, bias 4; 16*16*4 x 4 = 4,096 MACs
        BinaryConv2d(4, 4, 1, bias=True, activation="fp32", weight="sign", bypass="none", norm=False),
        nn.Flatten(),
        nn.Linear(1024, 3),  # fp: 3,075 params; 3 x 1,024 = 3,072 MACs
    )


def test_hand_built_counts() -> None:
    t = summarize(hand_model(), (1, 3, 8, 8)).totals()
    assert t["params_fp"] == 112 + 12 + 16 + 8 + 8 + 4 + 3075 == 3235
    assert t["params_binary"] == 288 + 288 + 128 + 16
    assert t["buffers"] == 17
    assert t["params_total"] == t["params_fp"] + t["params_binary"]
    assert t["macs_fp"] == 6912 + 4096 + 3072
    assert t["macs_binary"] == 18432 + 18432 + 8192
    assert t["ops"] == pytest.approx(14080 + 45056 / 64)
    assert t["binary_mac_fraction"] == pytest.approx(45056 / (45056 + 14080))
    assert t["memory_bytes"] == (720 + 32 * (3235 + 17)) / 8
    assert t["memory_fp32_bytes"] == 4 * (3235 + 720 + 17)
    assert t["paper_params"] == pytest.approx(3235 + 17 + 720 / 32)  # no prediction conv: honest == paper
    assert t["paper_params_honest"] == t["paper_params"]


def test_rows_fold_unit_parameters_and_count_calls() -> None:
    report = summarize(hand_model(), (8, 8))
    rows = {r.name: r for r in report.rows}
    assert set(rows) == {"0", "1", "2", "3", "4", "6"}  # binarizers and BN folded into their unit's row
    assert rows["1"].bits == "1/1" and rows["4"].bits == "32/1" and rows["0"].bits == "32/32"
    assert (rows["1"].params_fp, rows["1"].params_binary, rows["1"].buffers) == (28, 288, 17)
    assert all(r.calls == 1 for r in rows.values())
    text = report.table()
    assert "OPs = FLOPs + BOPs/64" in text and "paper-rule params" in text


class Shared(nn.Module):
    """One binary unit used at three positions (like the FPN smoothing) and a prediction conv."""

    def __init__(self) -> None:
        super().__init__()
        unit = BinaryConv2d(4, 4, 1)  # DAB 12 + BN 8 fp, 9 buffers, binary 16
        self.smooth = nn.ModuleList([unit, unit, unit])
        self.classifier = PredictionConv(4, 2)  # weight 8, bias 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.smooth:
            x = m(x)
        return self.classifier(x)


def test_shared_module_and_prediction_conv_rule() -> None:
    model = Shared()
    paper, honest = paper_rule_params(model)
    per_position = 12 + 8 + 9 + 16 / 32
    assert paper == pytest.approx(3 * per_position + 8 / 32 + 2)
    assert honest == pytest.approx(3 * per_position + 8 + 2)
    t = summarize(model, (1, 4, 5, 5)).totals()
    assert t["params_fp"] == 12 + 8 + 8 + 2 and t["params_binary"] == 16  # unique parameters
    assert t["macs_binary"] == 3 * 25 * 4 * 4 and t["macs_fp"] == 25 * 2 * 4
    fp_only = nn.Sequential(nn.Conv2d(4, 4, 1), PredictionConv(4, 2))  # no binary weight: nothing is 1/32
    assert paper_rule_params(fp_only) == (30.0, 30.0)


@pytest.mark.parametrize("layout,binary", [("bidense", True), ("fp32", False)])
def test_vit_attention_matmuls(layout: str, binary: bool) -> None:
    vit = ViT(MethodSpec.from_config(layout), embed_dim=12, depth=4, num_heads=2, pos_grid=4)
    report = summarize(vit, (1, 3, 28, 28))  # 2 x 2 patches + class token = 5 tokens
    matmuls = [r for r in report.rows if r.kind == "MatMul"]
    assert len(matmuls) == 8  # q k^T and A v in each block
    per_call = 2 * 5 * 5 * 6  # heads x N x N x head_dim
    total = sum(r.macs_binary if binary else r.macs_fp for r in matmuls)
    assert total == 8 * per_call
    linears = 5 * (12 * 36 + 12 * 12 + 12 * 48 + 48 * 12)  # qkv, proj, fc1, fc2 per block, 5 tokens
    t = report.totals()
    assert t["macs_binary"] == (4 * linears + 8 * per_call if binary else 0)
    patch = 12 * 4 * 3 * 14 * 14  # patch embedding, always full precision
    assert t["macs_fp"] == (patch if binary else patch + 4 * linears + 8 * per_call)


def test_meta_and_cpu_agree_and_model_untouched() -> None:
    model = build_model("upernet", "convnext", "nano", "bidense", ["seg"], num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meta = summarize(model, (64, 80)).totals()
    cpu = summarize(model, (64, 80), device="cpu").totals()
    assert meta == cpu
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bidense_tiny_480() -> None:
    """Table 1 setting: UperNet / ConvNeXt-T, 151 outputs, 480 x 480 (meta device: shapes only)."""
    with torch.device("meta"):
        model = build_model("upernet", "convnext", "tiny", "bidense", ["seg"], num_classes=151)
    t = summarize(model, (480, 480)).totals()
    assert t["paper_params"] == pytest.approx(1_625_946, abs=1)
    assert t["macs_fp"] == 120 * 120 * 96 * 48 + 480 * 480 * 128 * 151  # stem + final 1x1
    assert t["macs_binary"] == 64_814_107_392
    assert t["ops"] / 1e9 == pytest.approx(5.532, abs=1e-3)


def test_script_last_line_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    if not (ROOT / "conf" / "data" / "synthetic.yaml").exists():
        pytest.skip("conf/data/synthetic.yaml not there yet")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import complexity as script
    finally:
        sys.path.pop(0)
    script.main(["method=reactnet", "complexity.input_size=[64,64]", "complexity.group_depth=2"])
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    for key in (
        "params_total",
        "params_fp",
        "params_binary",
        "paper_params",
        "memory_bytes",
        "memory_fp32_bytes",
        "macs_fp",
        "macs_binary",
        "ops",
    ):
        assert key in summary
    assert summary["method"] == "reactnet" and summary["input_size"] == [1, 3, 64, 64]
    assert OmegaConf.create(summary).params_binary > 0
