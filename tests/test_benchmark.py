"""Smoke tests of bindense.analysis.benchmark (scripts/benchmark.py) on tiny models (functions and outputs;
timings are never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bindense import native
from bindense.analysis import benchmark as bench
from bindense.binary import BinaryConv2d


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(
            BinaryConv2d(8, 8, 3, padding=1, activation="dab", weight="scaled_sign"),
            BinaryConv2d(8, 16, 2, stride=2, activation="dab", weight="scaled_sign"),
        )
        self.head = nn.Conv2d(16, 4, 1)
        self.depth = nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.body(self.stem(x))
        return {"seg": self.head(f), "depth": self.depth(f)}


@pytest.fixture
def tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


def test_cpu_peak_bytes_sees_tensor_allocations() -> None:
    n = 1 << 20

    def fn() -> None:
        a = torch.ones(n, dtype=torch.uint8)
        b = torch.ones(n, dtype=torch.uint8)  # both live: peak >= 2 MiB
        del a, b
        torch.ones(n, dtype=torch.uint8)  # after the frees: does not raise the peak

    peak = bench.cpu_peak_bytes(fn)
    assert 2 * n <= peak < 3 * n
    keep = []
    bench.cpu_peak_bytes(lambda: keep.append(torch.ones(n, dtype=torch.uint8)))  # outlives its window
    assert n <= bench.cpu_peak_bytes(lambda: torch.ones(n, dtype=torch.uint8)) < 2 * n  # not counted again


def test_targets_and_loss(tiny: Tiny) -> None:
    x = torch.randn(2, 3, 8, 8)
    targets = bench.make_targets(tiny, x)
    assert targets["seg"].dtype == torch.long and targets["seg"].shape == (2, 4, 4)
    assert targets["depth"].shape == (2, 1, 4, 4)
    assert bench.loss_of(tiny(x), targets).dim() == 0


def test_benchmark_model_fields(tiny: Tiny) -> None:
    row = bench.benchmark_model(tiny, torch.randn(2, 3, 8, 8), "tiny", steps=2, warmup=1, runs=2)
    for key in ("step_time_s", "peak_memory_bytes", "saved_bytes", "latency_s", "train_throughput", "params"):
        assert row[key] > 0, key
    assert len(row["step_times_s"]) == 2 and len(row["latency_times_s"]) == 2
    assert "tiny" in bench.format_table([row])


def test_compare_naive_saves_less(tiny: Tiny) -> None:
    lean, naive, ratios = bench.compare_naive(tiny, torch.randn(2, 3, 8, 8), steps=1, warmup=0, runs=1)
    assert set(ratios) >= {"step_time_ratio", "peak_memory_ratio", "latency_ratio"}
    assert lean["saved_bytes"] < naive["saved_bytes"]  # memory is deterministic; timings are not asserted
    assert ratios["peak_memory_ratio"] > 0


def test_benchmark_packed_kernels(tiny: Tiny) -> None:
    rows = bench.benchmark_packed(tiny, torch.randn(1, 3, 8, 8), runs=1, warmup=0)
    assert [r["kernel"] for r in rows] == ["fake-quant", "float", "gemm", "xnor"]
    assert rows[1]["max_abs_diff"] == 0.0  # the float path of the packed file is exact
    assert all(r["max_abs_diff"] < 1e-4 for r in rows)
    assert "xnor" in bench.format_packed(rows)


def test_main_compare_naive_prints_ratios_last(tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.json"
    args = [
        "--compare-naive",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--runs",
        "1",
        "--batch-size",
        "2",
        "--height",
        "64",
        "--width",
        "64",
        "--out",
        str(out),
    ]
    bench.main(args)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    ratios = json.loads(last)
    assert {"step_time_ratio", "peak_memory_ratio"} <= set(ratios)
    saved = json.loads(out.read_text())
    assert saved["lean"]["peak_memory_bytes"] > 0 and saved["configs"]["overrides"]
    # the numbers name the CPU and the native kernels' ISA path they were measured on
    env = saved["environment"]
    assert env["cpu"] == native.cpu_name() != "" and env["native_isa"] in native.ISAS


@pytest.mark.slow
def test_main_vs_packed_and_data(tmp_path: Path, capsys) -> None:
    args = [
        "method=bidense",
        "data=synthetic",
        "--vs",
        "method=fp32_scratch",
        "--packed",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--runs",
        "1",
        "--packed-slow-runs",
        "1",
        "--batch-size",
        "2",
        "--height",
        "64",
        "--width",
        "64",
        "--data-batches",
        "2",
        "--out",
        str(tmp_path / "b.json"),
    ]
    result = bench.main(args)
    assert {"step_time_ratio", "peak_memory_ratio"} <= set(result["vs_ratios"])
    assert [r["kernel"] for r in result["packed"]] == ["fake-quant", "float", "gemm", "xnor"]
    assert "samples_per_s" in result["data_throughput"]
    assert "data throughput" in capsys.readouterr().out


def test_unit_table_before_after(tiny: Tiny) -> None:
    """Per-unit saved bytes: every binary unit is listed, and the fused node saves less than one node per binarizer.
    The native exact node keeps the unit's input, which body.1's pooled bypass keeps anyway (saved once), so there
    it saves less than the bf16 copy of ``s``."""
    text, info = bench.unit_table(tiny, torch.randn(2, 3, 16, 16))
    totals = info["totals_bytes"]
    assert totals["unfused"] > max(totals["fused exact"], totals["fused bf16"]) > 0
    assert info["groups"]["body.1"]["fused exact"] < info["groups"]["body.1"]["fused bf16"]
    assert {"body.0", "body.1", "(outside units)"} <= set(info["groups"])
    assert all(g["fused exact"] < g["unfused"] for k, g in info["groups"].items() if k.startswith("body"))
    assert "saved for backward per unit" in text
