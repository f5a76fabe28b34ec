"""Speed and memory of a model config on the current device: training step, peak memory, inference latency.

Usage (Hydra overrides of ``conf/train.yaml`` select the model; only ``cfg.model`` is instantiated)::

    python scripts/benchmark.py model.width=nano method=bidense                 # one config
    python scripts/benchmark.py method=bidense --vs method=fp32_scratch         # two configs and their ratios
    python scripts/benchmark.py --compare-naive                                 # lean vs naive binarizers
    python scripts/benchmark.py method=bidense --packed                         # + bit-packed inference kernels
    python scripts/benchmark.py data=synthetic                                  # + data-loader throughput
    python scripts/benchmark.py method=bidense --vs module.compile=true         # eager vs torch.compile

What is measured (docs/DEPLOY.md explains the method):

* ``step_time``: median wall time of a full training step (zero_grad, forward, loss, backward, AdamW step),
  after warm-up steps; ``train_throughput`` = batch / step_time.
* ``peak_memory``: peak tensor memory of one training step above what was live before it. CUDA:
  ``max_memory_allocated`` minus the allocation at the start. CPU: torch's CPU allocator has no peak counter, so
  the step runs once under ``torch.profiler`` with ``profile_memory=True``, which records every allocation and
  free (address, size); replaying them in time order gives the bytes allocated inside the step and still live,
  and the peak is its maximum. This counts every tensor allocation (activations, saved tensors, temporaries,
  gradients, optimizer temporaries) exactly, and nothing else (no Python objects, no allocator caching). The
  scratch buffers the fused binary units keep between steps (:mod:`bindense.binary.workspace`) are dropped before
  that step, so it counts them from their first use on.
* ``saved_for_backward``: bytes of the distinct tensor storages autograd keeps for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``; parameters excluded) — the activation memory of training.
* ``first_step_s`` (``--vs``): the first warm-up step, which includes the compile time of a config with
  ``module.compile=true`` (its net is compiled in place with ``nn.Module.compile``, train and eval forward alike).
* ``latency``: median wall time of an eval forward in ``torch.inference_mode`` after warm-up;
  ``infer_throughput`` = batch / latency.

The last line printed is a JSON object (``step_time_ratio`` and ``peak_memory_ratio`` for comparisons); the full
results are also written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from bindense.analysis.benchmark.measure import (
    benchmark_model,
    compare_interleaved,
    compare_naive,
    cpu_peak_bytes,
    loss_of,
    make_targets,
    measure_throughput,
    ratios,
)
from bindense.analysis.benchmark.packed import benchmark_packed
from bindense.analysis.benchmark.report import environment, format_packed, format_table
from bindense.analysis.benchmark.units import unit_table
from bindense.utils.compose import REPO, compose_config

__all__ = [
    "benchmark_model",
    "benchmark_packed",
    "compare_interleaved",
    "compare_naive",
    "compiled_if_asked",
    "data_throughput",
    "cpu_peak_bytes",
    "format_packed",
    "format_table",
    "loss_of",
    "main",
    "make_targets",
    "measure_throughput",
    "model_from_overrides",
    "ratios",
    "unit_table",
]

NAIVE_DEFAULT_OVERRIDES = ["model=upernet_convnext", "model.width=nano", "method=bidense"]


# ------------------------------------------------------------------------------------------------- configs


def model_from_overrides(overrides: Sequence[str]) -> tuple[nn.Module, DictConfig]:
    """``(net, config)``: ``conf/train.yaml`` composed with ``overrides``; only ``cfg.model`` is built, by the
    builder its ``_target_`` names (the project's model builder, exactly as ``train.py`` builds it)."""
    cfg = compose_config("train", overrides, hydra_node=False)
    return hydra.utils.instantiate(cfg.model), cfg


def compiled_if_asked(model: nn.Module, cfg: DictConfig) -> nn.Module:
    """``model`` compiled in place (``nn.Module.compile``: same parameters and state-dict keys) when the config
    sets ``module.compile=true``, as training would; unchanged otherwise."""
    if (cfg.get("module") or {}).get("compile"):
        model.compile()
    return model


def data_throughput(cfg: DictConfig, num_batches: int, workers: int) -> dict:
    """Data-loader throughput of ``cfg.data`` (:func:`measure_throughput`)."""
    return measure_throughput(hydra.utils.instantiate(cfg.data), num_batches, workers)


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml selecting the model")
    p.add_argument("--compare-naive", action="store_true", help="lean vs naive binarizers on the same model")
    p.add_argument(
        "--vs",
        action="append",
        default=[],
        metavar="OVERRIDE",
        help="an override of the second config (repeatable); reports first / second ratios",
    )
    p.add_argument("--units", action="store_true", help="saved-for-backward bytes per binary unit (3 formats)")
    p.add_argument("--packed", action="store_true", help="also time the bit-packed export's inference kernels")
    p.add_argument("--deploy", action="store_true", help="export + native runtime vs the fp32 twin (docs/DEPLOY.md)")
    p.add_argument("--deploy-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="--deploy input size (default: 480 480 for UperNet, 476 476 for model=dpt_vit_s14)")
    p.add_argument("--deploy-ckpt", default=None, help="--deploy a trained checkpoint on validation images")
    p.add_argument("--deploy-images", type=int, default=8)
    p.add_argument("--packed-slow-runs", type=int, default=3, help="timed runs of the (slow) xnor kernel")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20, help="timed inference runs")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-batches", type=int, default=20, help="batches for the data throughput line")
    p.add_argument("--data-workers", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON output (default logs/benchmark/<time>.json)")
    p.add_argument("--binary-conv", action="store_true",
                   help="only the 3x3 256->256 64x64 binary layer: native vs torch float vs OpenVINO (docs/NATIVE.md)")
    p.add_argument("--isa", default=None, help="--binary-conv: native ISA path (avx512|avx2|generic|all)")
    p.add_argument("--train-kernels", action="store_true",
                   help="only the native training kernels on every ISA path (docs/TRAINING.md section 5)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.binary_conv:
        from bindense.native import bench

        out = bench.run(threads=args.threads or 1, isa=args.isa, rounds=args.runs, warmup=args.warmup)
        print(json.dumps(out))
        return out
    if args.train_kernels:
        from bindense.binary import kernel_bench

        rows = kernel_bench.train_kernels(threads=args.threads or 2, rounds=args.runs, warmup=args.warmup)
        print(kernel_bench.format_rows(rows))
        return {"train_kernels": rows}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    overrides = list(args.overrides)
    if args.deploy:
        from bindense.export.deploy import main_deploy

        return main_deploy(overrides, model_from_overrides, args)
    if args.compare_naive and not overrides:
        overrides = list(NAIVE_DEFAULT_OVERRIDES)
    if args.compare_naive and args.vs:
        raise SystemExit("benchmark.py: --compare-naive and --vs are two separate comparisons; run one at a time")
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, args.height, args.width, device=device)
    model, cfg = model_from_overrides(overrides)
    model = compiled_if_asked(model.to(device), cfg)
    name = " ".join(overrides) or "defaults"
    result: dict[str, Any] = {
        "environment": environment(device),
        "input": [args.batch_size, 3, args.height, args.width],
        "steps": args.steps,
        "warmup": args.warmup,
        "runs": args.runs,
        "configs": {},
    }
    rows: list[dict] = []
    ratio_rows: list[tuple[str, dict]] = []
    last: dict = {}
    if args.compare_naive:
        lean, naive, r = compare_naive(model, x, args.steps, args.warmup, args.runs)
        lean["name"], naive["name"] = f"lean: {name}", f"naive: {name}"
        rows += [lean, naive]
        ratio_rows.append(("lean / naive", r))
        result["configs"] = {"overrides": overrides}
        result["lean"], result["naive"], last = lean, naive, r
    elif args.vs:  # both configs with their steps in alternation, so that machine noise hits them alike
        other_overrides = overrides + list(args.vs)
        other_name = "vs " + " ".join(args.vs)
        torch.manual_seed(args.seed)
        other, other_cfg = model_from_overrides(other_overrides)
        pair = {name: (model, False), other_name: (compiled_if_asked(other.to(device), other_cfg), False)}
        measured = compare_interleaved(pair, x, args.steps, args.warmup, args.runs)
        rows += list(measured.values())
        r = ratios(measured[name], measured[other_name])
        ratio_rows.append((f"[{name}] / [{other_name}]", r))
        result["configs"][name] = overrides
        result["configs"][other_name] = other_overrides
        result["vs_ratios"] = r
        last = r
    else:
        rows.append(benchmark_model(model, x, name, args.steps, args.warmup, args.runs))
        result["configs"][name] = overrides
    result["rows"] = rows
    text = format_table(rows, ratio_rows)
    if args.units:
        units_text, result["units"] = unit_table(model, x)
        text += "\n" + units_text
    if args.packed:
        packed = benchmark_packed(model, x, args.runs, args.warmup, args.packed_slow_runs)
        result["packed"] = packed
        text += "\n" + format_packed(packed)
    if any(o.startswith("data=") for o in overrides):
        tp = data_throughput(cfg, args.data_batches, args.data_workers)
        result["data_throughput"] = tp
        text += "\ndata throughput: " + ", ".join(f"{k} {v}" for k, v in tp.items())
    out = args.out or REPO / "logs" / "benchmark" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    env = result["environment"]
    print(f"device {device} ({env['threads']} threads, {env['cpu']}, native ISA {env['native_isa']}), "
          f"input {tuple(x.shape)}")
    print(text)
    print(f"results written to {out}")
    print(json.dumps(last or {k: rows[0][k] for k in ("step_time_s", "peak_memory_bytes", "latency_s")}))
    return result
