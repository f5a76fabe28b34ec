"""Activation entropy (BiDense Fig. 3): the entropy of known distributions, the recorder's per-channel counts,
and the script's JSON shape on a tiny trained checkpoint."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
from test_train import tiny_train
from torch import nn

from bindense.analysis.entropy import (
    EntropyRecorder,
    activation_binarizers,
    binary_entropy_bits,
    entropy_bits,
    measure_entropy,
)
from bindense.binary import BinaryConv2d

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "entropy.py"


def test_entropy_of_known_distributions():
    for k in (1, 2, 5, 32):
        assert float(entropy_bits(torch.ones(k))) == pytest.approx(math.log2(k))  # uniform over k bins
    assert float(entropy_bits(torch.tensor([0.0, 7.0, 0.0]))) == 0.0  # a constant
    assert float(entropy_bits(torch.tensor([1.0, 1.0, 2.0]))) == pytest.approx(1.5)
    p = torch.tensor([0.0, 0.5, 0.25, 1.0])
    expected = [0.0, 1.0, -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)), 0.0]
    assert binary_entropy_bits(p).tolist() == pytest.approx(expected)


class Probe(nn.Module):
    """An identity-like net whose only binarizer sees the input itself (sign activation)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.unit = BinaryConv2d(channels, 2, 1, activation="sign", weight="sign", bypass="none")

    def forward(self, x):
        return self.unit(x)


def test_after_entropy_of_a_plus_minus_one_with_known_p():
    net = Probe()
    x = torch.ones(4, 3, 2, 4)  # 32 positions per channel
    x[:2, 1, 0] = -1  # channel 1: 8 of 32 negative, p(+1) = 3/4
    x[:, 2] = -1  # channel 2: constant -1
    x[:, 0, :, ::2] = -1  # channel 0: p = 1/2
    with EntropyRecorder(activation_binarizers(net), mode="after") as rec:
        net(x)
    (name,) = rec.order
    h = rec.stats[name].after()
    assert h.tolist() == pytest.approx([1.0, -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)), 0.0])
    assert all(not m._forward_hooks for m in net.modules())  # hooks removed on exit


def test_before_entropy_histogram_of_uniform_and_constant_channels():
    net = Probe()
    bins = 8
    x = torch.zeros(1, 3, 1, 64)
    x[0, 0, 0] = torch.arange(64.0)  # uniform over 8 equal-width bins of its range: 3 bits
    x[0, 1, 0] = 5.0  # constant: 0 bits
    x[0, 2, 0, :32] = 1.0  # two values: 1 bit
    result = measure_entropy(net, lambda: [x], bins=bins)
    (layer,) = result["layers"]
    assert result["bins"] == bins and result["max_bits"] == {"before": 3.0, "after": 1.0}
    assert layer["before"] == pytest.approx((3.0 + 0.0 + 1.0) / 3)
    assert result["first_binarization"]["layer"] == layer["name"] and layer["channels"] == 3


def test_measure_entropy_refuses_a_full_precision_net():
    with pytest.raises(ValueError, match="no 1-bit activation binarizer"):
        measure_entropy(nn.Conv2d(3, 3, 1), lambda: [torch.zeros(1, 3, 2, 2)])


def test_script_json_shape_on_a_tiny_checkpoint(tmp_path, capsys, monkeypatch):
    tiny_train(tmp_path / "run", "callbacks=no_diagnostics", "method=reactnet")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "ent"
    monkeypatch.setattr(sys, "argv", ["entropy.py", str(ckpt), "--out", str(out), "--bins", "16"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exit_info.value.code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {str(ckpt)}
    first = last[str(ckpt)]["first_binarization"]
    assert last[str(ckpt)]["label"] == "reactnet" and 0 <= first["after"] <= 1 <= first["before"] <= 4
    report = json.loads((out / "entropy.json").read_text())
    (entry,) = report["checkpoints"]
    assert entry["split"] == "val" and entry["bins"] == 16 and len(entry["layers"]) > 10
    assert entry["layers"][0]["name"] == entry["first_binarization"]["layer"]
    assert (out / "entropy.png").stat().st_size > 10_000
