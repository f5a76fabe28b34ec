"""Smoke test of the --binary-conv benchmark (keys and the exactness checks it runs; timings never asserted)."""

import importlib.util

import pytest

from bindense import native
from bindense.native import bench


@pytest.mark.parametrize("isa", [None, "all"])
def test_binary_conv_benchmark_keys(isa):
    out = bench.run(threads=1, isa=isa, channels=64, size=8, rounds=1, warmup=1)
    for key in ("binary_ms", "float_ms", "speedup", "isa", "threads", "openvino_ms"):
        assert key in out
    assert out["isa"] == native.isa() and out["threads"] == 1
    assert (out["openvino_ms"] is None) == (importlib.util.find_spec("openvino") is None)
    if isa == "all":
        assert set(out["binary_ms_by_isa"]) == set(native.supported_isas())


def test_binary_conv_benchmark_follows_forced_isa(monkeypatch):
    """``BINDENSE_ISA=generic python scripts/benchmark.py --binary-conv`` times the forced path, not the best."""
    monkeypatch.setenv("BINDENSE_ISA", "generic")
    out = bench.run(threads=1, channels=64, size=8, rounds=1, warmup=1)
    assert out["isa"] == "generic" and "binary:generic" in out["cpu_ms"]


def test_binary_conv_benchmark_rejects_unknown_isa():
    with pytest.raises(ValueError, match="not an ISA path"):
        bench.run(isa="sse9", channels=64, size=8, rounds=1)


def test_layer_table_rows(monkeypatch):
    small = (("3x3", 70, 20, 6, 3, 1, 1, 1), ("dw", 70, 70, 6, 7, 1, 3, 70), ("convT", 70, 8, 3, 2, 2, 0, 0),
             ("dab", 70, 8, 5, 3, 1, 1, -32))
    monkeypatch.setattr(bench, "LAYERS", small)
    rows = bench.layers(rounds=1)  # also checks every path against the float conv of the signs
    assert [r["layer"] for r in rows] == ["3x3", "dw", "convT", "dab"]
    for r in rows:
        assert "float_cpu_ms" in r and all(f"{i}_cpu_ms" in r for i in native.supported_isas())
