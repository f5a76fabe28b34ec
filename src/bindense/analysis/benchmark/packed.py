"""Eval latency of the bit-packed export's kernels beside the fake-quantised model (``--packed``)."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from bindense.analysis.benchmark.measure import Outputs, _outputs, _sync


def benchmark_packed(model: nn.Module, x: Tensor, runs: int = 20, warmup: int = 3, slow_runs: int = 3) -> list[dict]:
    """Eval latency of the exported model with the float path and the packed binary kernels, and of the original.

    The model is exported to a temporary ``.bdn`` file and loaded once per kernel (``float``: decoded +-scale
    weights in the ordinary layers; ``gemm`` / ``xnor``: the packed BiDense kernels); the row ``fake-quant`` is the
    original model. Each row also gives the largest output difference to the fake-quantised model and the
    per-pixel argmax agreement of class outputs. The slow
    ``xnor`` kernel is timed ``slow_runs`` times (after one warm-up run).
    """
    from bindense.export import KERNELS, export_packed, load_packed

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.bdn"
        export_packed(model, path, config=None)
        loaded = {k: load_packed(path, model=copy.deepcopy(model), kernel=k).to(x.device) for k in KERNELS}
    model.eval()
    loaded = {"fake-quant": model, **loaded}  # the original (latent weights binarized on the fly) as baseline
    times: dict[str, list[float]] = {k: [] for k in loaded}
    outputs: dict[str, Outputs] = {}
    with torch.inference_mode():
        reference = _outputs(model(x))
        for i in range(warmup + runs):  # kernels in alternation, so that machine noise hits them alike
            for kernel, m in loaded.items():
                quota = slow_runs if kernel == "xnor" else runs
                if len(times[kernel]) >= quota or (kernel == "xnor" and 0 < i < warmup):
                    continue  # the slow kernel: one warm-up run and ``slow_runs`` timed runs
                _sync(x.device)
                start = time.perf_counter()
                outputs[kernel] = _outputs(m(x))
                _sync(x.device)
                if i >= warmup or (kernel == "xnor" and i > 0):
                    times[kernel].append(time.perf_counter() - start)
    rows = []
    for kernel in loaded:
        out = outputs[kernel]
        latency = statistics.median(times[kernel]) if times[kernel] else float("nan")
        rows.append(
            {
                "kernel": kernel,
                "latency_s": latency,
                "latency_times_s": times[kernel],
                "infer_throughput": x.shape[0] / latency,
                "max_abs_diff": max((out[k] - reference[k]).abs().max().item() for k in reference),
                "argmax_agreement": {
                    k: (out[k].argmax(1) == reference[k].argmax(1)).float().mean().item()
                    for k in reference
                    if reference[k].dim() == 4 and reference[k].shape[1] > 1
                },
            }
        )
    return rows
