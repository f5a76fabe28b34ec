"""Benchmark of one binary conv layer: bindense.native vs torch float conv2d vs OpenVINO's BinaryConvolution.

``python scripts/benchmark.py --binary-conv [--threads N] [--isa NAME|all]`` calls :func:`run`. Every candidate
runs once per round, in turn (interleaved), so load changes on a shared machine hit them alike; the medians over
the rounds are reported. The OpenVINO anchor (optional package ``openvino``, extra ``bindense[anchors]``) is a
FakeQuantize(levels=2) -> Convolution(+-1 weights) graph that its CPU plugin rewrites into a BinaryConvolution;
the run checks that the compiled graph really holds one and that its output equals ours.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from bindense import native


@contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _isa_call(name: str, fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def call() -> torch.Tensor:
        native.set_isa(name)
        try:
            return fn()
        finally:
            native.set_isa(None)

    return call


def openvino_layer(x: torch.Tensor, w: torch.Tensor, padding: int, threads: int) -> Callable[[], torch.Tensor] | None:
    """OpenVINO CPU BinaryConvolution of sign(x) and sign(w) as a callable on ``x``; None without ``openvino``."""
    try:
        import numpy as np
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None

    def const(v: float):
        return ops.constant(np.full((1, 1, 1, 1), v, dtype=np.float32))

    signs = torch.where(w >= 0, 1.0, -1.0).numpy()
    param = ops.parameter(list(x.shape), np.float32, name="x")
    # Thresholds -1/+1 (as its docs' binarization pattern); equal low/high bounds gave wrong results there.
    fq = ops.fake_quantize(param, const(-1.0), const(1.0), const(-1.0), const(1.0), 2)
    conv = ops.convolution(fq, ops.constant(signs), [1, 1], [padding, padding], [padding, padding], [1, 1])
    compiled = ov.Core().compile_model(ov.Model([conv], [param]), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY"})
    kinds = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()]
    if "BinaryConvolution" not in kinds:
        raise RuntimeError(f"OpenVINO did not compile the layer into a BinaryConvolution (got {kinds})")
    request = compiled.create_infer_request()
    feed = {0: x.numpy()}
    return lambda: torch.from_numpy(request.infer(feed)[0])


def run(threads: int = 1, isa: str | None = None, channels: int = 256, size: int = 64, kernel: int = 3,
        rounds: int = 30, warmup: int = 3, seed: int = 0) -> dict:
    """Time the ``kernel`` x ``kernel`` conv ``channels`` -> ``channels`` on ``size`` x ``size``, batch 1.

    ``isa``: one native path (default: :func:`bindense.native.isa`, the best unless ``BINDENSE_ISA`` forces
    another), or ``"all"`` for every path this CPU runs (``binary_ms`` is then
    the best path's, the others in ``binary_ms_by_isa``). Returns the JSON-able results.
    """
    isas = native.supported_isas() if isa in (None, "all") else [isa]
    if isa not in (None, "all"):
        native.set_isa(isa)  # validates the name
        native.set_isa(None)
    if isa is None:  # the path the runtime would use: the best one, or the one BINDENSE_ISA / set_isa forces
        isas = [native.isa()]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, size, size, generator=g)
    w = torch.randn(channels, channels, kernel, kernel, generator=g)
    pad = kernel // 2
    xs, ws = torch.where(x >= 0, 1.0, -1.0), torch.where(w >= 0, 1.0, -1.0)
    xb, wb = native.pack_activations(x), native.pack_weights(w)

    cands: dict[str, Callable[[], torch.Tensor]] = {"float": lambda: F.conv2d(xs, ws, padding=pad)}
    for name in isas:
        cands[f"conv:{name}"] = _isa_call(name, lambda: native.binary_conv2d(xb, wb, channels, kernel, 1, pad))
        cands[f"pack+conv:{name}"] = _isa_call(name, lambda: native.binary_conv2d(
            native.pack_activations(x), wb, channels, kernel, 1, pad))
    with _threads(threads):
        ov_call = openvino_layer(x, w, pad, threads)
        if ov_call is not None:
            cands["openvino"] = ov_call
        want = cands["float"]()
        for key, fn in cands.items():  # exactness first (integer sums): every path equals the float conv of signs
            if not torch.equal(fn(), want):
                raise RuntimeError(f"{key}: output differs from the float conv of the signs")
            for _ in range(warmup - 1):
                fn()
        times: dict[str, list[float]] = {k: [] for k in cands}
        cpu: dict[str, list[float]] = {k: [] for k in cands}
        for _ in range(rounds):
            for key, fn in cands.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[key].append((time.perf_counter() - t0) * 1e3)
                cpu[key].append((time.process_time() - c0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    best = isas[0]
    out = {
        "layer": f"conv{kernel}x{kernel} {channels}->{channels} {size}x{size} batch 1",
        "isa": best, "threads": threads, "rounds": rounds,
        "binary_ms": round(med[f"conv:{best}"], 3),
        "binary_with_pack_ms": round(med[f"pack+conv:{best}"], 3),
        "float_ms": round(med["float"], 3),
        "speedup": round(med["float"] / med[f"conv:{best}"], 2),
        "speedup_with_pack": round(med["float"] / med[f"pack+conv:{best}"], 2),
        "openvino_ms": round(med["openvino"], 3) if "openvino" in med else None,
        "speedup_vs_openvino": (round(med["openvino"] / med[f"pack+conv:{best}"], 2) if "openvino" in med
                                else None),
        # CPU time of the process (all its threads): on a shared, oversubscribed machine the wall times above
        # include waits for a core; at 1 thread these are the compute times.
        "cpu_ms": {k.replace("conv:", "binary:"): round(v, 3) for k, v in cpu_med.items()},
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL"),
        "torch": torch.__version__, "cpu": native.cpu_name(),
    }
    if len(isas) > 1:
        out["binary_ms_by_isa"] = {n: round(med[f"conv:{n}"], 3) for n in isas}
        out["speedup_by_isa"] = {n: round(med["float"] / med[f"conv:{n}"], 2) for n in isas}
    return out


# (name, C_in, C_out, H=W, kernel, stride, padding, groups); transposed convs are marked by groups = 0; a 9th
# field "sign" times native.sign_depthwise_conv2d on the float input (signs taken inside) instead of packed bits.
LAYERS = (
    ("3x3 256->256 64x64", 256, 256, 64, 3, 1, 1, 1),
    ("3x3/2 128->256 64x64", 128, 256, 64, 3, 2, 1, 1),
    ("1x1 384->1536 30x30", 384, 1536, 30, 1, 1, 0, 1),
    ("1x1 96->384 120x120", 96, 384, 120, 1, 1, 0, 1),
    ("2x2/2 96->192 120x120", 96, 192, 120, 2, 2, 0, 1),
    ("dw7x7 96 120x120", 96, 96, 120, 7, 1, 3, 96),
    ("dw7x7 384 30x30", 384, 384, 30, 7, 1, 3, 384),
    ("dw7x7 96 120x120, from float input", 96, 96, 120, 7, 1, 3, 96, "sign"),
    ("dw7x7 384 30x30, from float input", 384, 384, 30, 7, 1, 3, 384, "sign"),
    ("convT 4x4/4 256->128 30x30", 256, 128, 30, 4, 4, 0, 0),
    ("3x3 200->100 40x40 (DAB groups of 64)", 200, 100, 40, 3, 1, 1, -64),
)


def _layer_candidates(layer: tuple, g: torch.Generator) -> dict[str, Callable[[], torch.Tensor]]:
    """The float conv of the signs and every native ISA path for one row of :data:`LAYERS`."""
    _, c, o, hw, k, s, p, groups = layer[:8]
    x = torch.randn(1, c, hw, hw, generator=g)
    xb, xs = native.pack_activations(x), torch.where(x >= 0, 1.0, -1.0)
    if layer[8:] == ("sign",):  # depthwise straight from the float input
        w = torch.randn(c, 1, k, k, generator=g)
        ws = torch.where(w >= 0, 1.0, -1.0)
        signs = ws.to(torch.int8)

        def ref() -> torch.Tensor:
            return F.conv2d(xs, ws, stride=s, padding=p, groups=c)

        def op() -> torch.Tensor:
            return native.sign_depthwise_conv2d(x, signs, k, s, p)[0]
    elif groups == 0:  # transposed
        w = torch.randn(c, o, k, k, generator=g)
        ws, wb = torch.where(w >= 0, 1.0, -1.0), native.pack_weights(w.permute(1, 0, 2, 3))

        def ref() -> torch.Tensor:
            return F.conv_transpose2d(xs, ws, stride=s, padding=p)

        def op() -> torch.Tensor:
            return native.binary_conv_transpose2d(xb, wb, c, k, s, p)
    else:
        grp, gsize = (groups, None) if groups > 0 else (1, -groups)
        w = torch.randn(o, c // grp, k, k, generator=g)
        ws, wb = torch.where(w >= 0, 1.0, -1.0), native.pack_weights(w)
        gs = torch.rand(1, (c - 1) // gsize + 1, generator=g) + 0.5 if gsize else None
        xin = xs * gs[:, torch.arange(c) // gsize, None, None] if gsize else xs

        def ref() -> torch.Tensor:
            return F.conv2d(xin, ws, stride=s, padding=p, groups=grp)

        def op() -> torch.Tensor:
            return native.binary_conv2d(xb, wb, c, k, s, p, grp, channel_group_size=gsize, group_scale=gs)

    return {"float": ref, **{name: _isa_call(name, op) for name in native.supported_isas()}}


def layers(threads: int = 1, rounds: int = 9, seed: int = 0) -> list[dict]:
    """Per-layer table: every native ISA path vs the torch float conv of the signs, interleaved; median CPU and
    wall times per layer of :data:`LAYERS` (groups = 0: transposed conv; groups = -g: DAB channel groups of g)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    with _threads(threads):
        for layer in LAYERS:
            cands = _layer_candidates(layer, g)
            want = cands["float"]()
            for key, fn in cands.items():
                torch.testing.assert_close(fn(), want, rtol=1e-5, atol=1e-3, msg=f"{layer[0]} {key}")
            wall: dict[str, list[float]] = {key: [] for key in cands}
            cpu: dict[str, list[float]] = {key: [] for key in cands}
            for _ in range(rounds):
                for key, fn in cands.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    wall[key].append((time.perf_counter() - t0) * 1e3)
                    cpu[key].append((time.process_time() - c0) * 1e3)
            row: dict = {"layer": layer[0], "threads": threads}
            for key in cands:
                row[f"{key}_cpu_ms"] = round(statistics.median(cpu[key]), 3)
                row[f"{key}_wall_ms"] = round(statistics.median(wall[key]), 3)
            rows.append(row)
    return rows


if __name__ == "__main__":  # python -m bindense.native.bench [threads]: the per-layer table
    import json
    import sys

    n_threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    table = layers(threads=n_threads)
    isas = native.supported_isas()
    print(f"| layer ({n_threads} thread(s), CPU ms) | float | " + " | ".join(isas) + " | speedup (best) |")
    print("|---|---:|" + "---:|" * len(isas) + "---:|")
    for r in table:
        cells = [f"{r[f'{i}_cpu_ms']:.2f}" for i in isas]
        print(f"| {r['layer']} | {r['float_cpu_ms']:.2f} | " + " | ".join(cells)
              + f" | {r['float_cpu_ms'] / r[f'{isas[0]}_cpu_ms']:.2f}x |")
    print(json.dumps(table))
