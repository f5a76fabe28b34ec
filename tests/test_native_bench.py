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


def test_binary_conv_benchmark_rejects_unknown_isa():
    with pytest.raises(ValueError, match="not an ISA path"):
        bench.run(isa="sse9", channels=64, size=8, rounds=1)
