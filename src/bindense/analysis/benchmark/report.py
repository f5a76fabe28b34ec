"""Plain-text tables of benchmark rows and the environment they were measured in."""

from __future__ import annotations

import platform
from collections.abc import Sequence

import torch

from bindense import native


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def format_table(rows: Sequence[dict], ratio_rows: Sequence[tuple[str, dict]] = ()) -> str:
    """Plain-text table of measurement rows, followed by ratio lines."""
    header = ["config", "step ms", "train img/s", "peak MiB", "saved MiB", "latency ms", "infer img/s"]
    lines = [header]
    for r in rows:
        lines.append(
            [
                r["name"],
                f"{r['step_time_s'] * 1e3:.1f}",
                f"{r['train_throughput']:.2f}",
                mib(r["peak_memory_bytes"]),
                mib(r.get("saved_bytes", 0)),
                f"{r['latency_s'] * 1e3:.1f}",
                f"{r['infer_throughput']:.2f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    ]
    text.insert(1, "-+-".join("-" * w for w in widths))
    text += [f"{r['name']}: first step {r['first_step_s']:.2f} s" for r in rows if "first_step_s" in r]
    for label, ratio in ratio_rows:
        text.append(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in ratio.items()))
    return "\n".join(text)


def format_packed(rows: Sequence[dict]) -> str:
    lines = ["packed export, eval latency per kernel:"]
    for r in rows:
        agree = ", ".join(f"{k} argmax agreement {v:.4f}" for k, v in r["argmax_agreement"].items())
        lines.append(
            f"  {r['kernel']:<10} {r['latency_s'] * 1e3:8.1f} ms  {r['infer_throughput']:7.2f} img/s  "
            f"max |diff| vs fake-quant {r['max_abs_diff']:.2e}" + (f"  {agree}" if agree else "")
        )
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    info = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu": native.cpu_name(),
        # the ISA path the native kernels take here (AVX-512, AVX2, generic or torch; docs/NATIVE.md)
        "native_isa": native.isa(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
