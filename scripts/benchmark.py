"""Speed and memory of a model config on the current device: training step, peak memory, inference latency.

Usage (Hydra overrides of ``conf/train.yaml`` select the model; only ``cfg.model`` is instantiated)::

    python scripts/benchmark.py model.width=nano method=bidense                 # one config
    python scripts/benchmark.py method=bidense --vs method=fp32_scratch         # two configs and their ratios
    python scripts/benchmark.py --compare-naive                                 # lean vs naive binarizers
    python scripts/benchmark.py method=bidense --packed                         # + bit-packed inference kernels
    python scripts/benchmark.py data=synthetic                                  # + data-loader throughput

What is measured (docs/DEPLOY.md explains the method):

* ``step_time``: median wall time of a full training step (zero_grad, forward, loss, backward, AdamW step),
  after warm-up steps; ``train_throughput`` = batch / step_time.
* ``peak_memory``: peak tensor memory of one training step above what was live before it. CUDA:
  ``max_memory_allocated`` minus the allocation at the start. CPU: torch's CPU allocator has no peak counter, so
  the step runs once under ``torch.profiler`` with ``profile_memory=True``, which records every allocation and
  free (address, size); replaying them in time order gives the bytes allocated inside the step and still live,
  and the peak is its maximum. This counts every tensor allocation (activations, saved tensors, temporaries,
  gradients, optimizer temporaries) exactly, and nothing else (no Python objects, no allocator caching).
* ``saved_for_backward``: bytes of the distinct tensor storages autograd keeps for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``; parameters excluded) — the activation memory of training.
* ``latency``: median wall time of an eval forward in ``torch.inference_mode`` after warm-up;
  ``infer_throughput`` = batch / latency.

The last line printed is a JSON object (``step_time_ratio`` and ``peak_memory_ratio`` for comparisons); the full
results are also written to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
# The setting of the lean-vs-naive target (issue 7): BiDense UperNet, nano width, batch 4, 128x160.
NAIVE_DEFAULT_OVERRIDES = ["model=upernet_convnext", "model.width=nano", "method=bidense"]

Outputs = dict[str, Tensor]


# ----------------------------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _outputs(out: Any) -> Outputs:
    """Model outputs as a dict of tensors (models return ``{task: tensor}``; a bare tensor is ``"out"``)."""
    if isinstance(out, Tensor):
        return {"out": out}
    return {k: v for k, v in out.items() if isinstance(v, Tensor)}


def make_targets(model: nn.Module, x: Tensor, seed: int = 0) -> Outputs:
    """Random targets shaped like the model's outputs: class maps for ``seg``-like keys, reals otherwise."""
    with torch.no_grad():
        was_training = model.training
        model.eval()
        out = _outputs(model(x))
        model.train(was_training)
    g = torch.Generator().manual_seed(seed)
    targets: Outputs = {}
    for key, y in out.items():
        if key in ("seg", "semseg", "parts"):
            labels = torch.randint(0, y.shape[1], (y.shape[0], *y.shape[2:]), generator=g)
            targets[key] = labels.to(y.device)
        else:
            targets[key] = torch.rand(y.shape, generator=g).to(y.device, y.dtype)
    return targets


def loss_of(outputs: Any, targets: Outputs) -> Tensor:
    """Cross-entropy for class maps, MSE for real-valued outputs, summed over tasks."""
    outputs = _outputs(outputs)
    total = torch.zeros((), device=next(iter(outputs.values())).device)
    for key, y in outputs.items():
        t = targets[key]
        total = total + (F.cross_entropy(y, t) if t.dtype == torch.long else F.mse_loss(y, t))
    return total


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, targets: Outputs) -> None:
    """One full training step (the unit of ``step_time``)."""
    optimizer.zero_grad(set_to_none=True)
    loss_of(model(x), targets).backward()
    optimizer.step()


@contextlib.contextmanager
def _mode(reference: bool) -> Iterator[None]:
    """Lean binarizers (default) or the naive reference compositions."""
    from bindense.binary import use_reference

    with use_reference(reference):
        yield


# ------------------------------------------------------------------------------------------- measurements


def cpu_peak_bytes(fn: Callable[[], None]) -> int:
    """Peak bytes of tensors allocated by ``fn`` and live at the same time, from the profiler's allocation events.

    ``torch.profiler`` (``profile_memory=True``) records every CPU allocator allocation and free with its address
    and size. Replayed in time order, counting only blocks allocated inside the window (a free of an older block is
    ignored), the running sum is the tensor memory ``fn`` holds; its maximum is the peak.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        fields = event.extra_fields
        if type(fields).__name__ == "_ExtraFields_Allocation" and fields.device.type == "cpu":
            events.append((event.start_time_ns, event.id, int(fields.alloc_size), int(fields.ptr)))
    live, peak, sizes = 0, 0, {}
    for _, _, size, ptr in sorted(events):
        if size > 0:
            sizes[ptr] = size
            live += size
            peak = max(peak, live)
        elif ptr in sizes:
            live -= sizes.pop(ptr)
    return peak


def peak_step_memory(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, targets: Outputs) -> int:
    """Peak tensor memory (bytes) of one training step above the memory live before it."""
    optimizer.zero_grad(set_to_none=True)  # free last step's gradients outside the measured window
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        train_step(model, optimizer, x, targets)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - before
    return cpu_peak_bytes(lambda: train_step(model, optimizer, x, targets))


def saved_tensor_bytes(model: nn.Module, x: Tensor, targets: Outputs) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward (parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr != 0:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_of(model(x), targets)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def time_train_steps(model: nn.Module, x: Tensor, targets: Outputs, steps: int, warmup: int) -> list[float]:
    optimizer = make_optimizer(model)
    model.train()
    times = []
    for i in range(warmup + steps):
        _sync(x.device)
        start = time.perf_counter()
        train_step(model, optimizer, x, targets)
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def time_inference(model: nn.Module, x: Tensor, runs: int, warmup: int) -> list[float]:
    """Wall times of eval forwards under ``torch.inference_mode`` after ``warmup`` untimed ones."""
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            _sync(x.device)
            start = time.perf_counter()
            model(x)
            _sync(x.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def _summary(name: str, batch: int, step_times: list[float], infer_times: list[float], **extra: Any) -> dict:
    step = statistics.median(step_times) if step_times else float("nan")
    latency = statistics.median(infer_times) if infer_times else float("nan")
    return {
        "name": name,
        "step_time_s": step,
        "step_times_s": step_times,
        "train_throughput": batch / step,
        "latency_s": latency,
        "latency_times_s": infer_times,
        "infer_throughput": batch / latency,
        **extra,
    }


def benchmark_model(
    model: nn.Module,
    x: Tensor,
    name: str = "model",
    steps: int = 10,
    warmup: int = 3,
    runs: int = 20,
    reference: bool = False,
) -> dict:
    """All measurements of one model on input ``x`` (``reference=True``: the naive binarizers)."""
    targets = make_targets(model, x)
    n_params = sum(p.numel() for p in model.parameters())
    with _mode(reference):
        model.train()
        saved = saved_tensor_bytes(model, x, targets)
        step_times = time_train_steps(model, x, targets, steps, warmup)
        optimizer = make_optimizer(model)
        train_step(model, optimizer, x, targets)  # optimizer state exists before the measured step
        peak = peak_step_memory(model, optimizer, x, targets)
        infer_times = time_inference(model, x, runs, warmup)
    return _summary(
        name, x.shape[0], step_times, infer_times, peak_memory_bytes=peak, saved_bytes=saved, params=n_params
    )


def compare_interleaved(
    models: dict[str, tuple[nn.Module, bool]], x: Tensor, steps: int = 10, warmup: int = 3, runs: int = 20
) -> dict[str, dict]:
    """Several models (``name -> (model, reference)``) measured with their steps in alternation (same noise).

    Training steps and inference runs alternate between the models, so that machine noise hits them alike; every
    model gets the targets of the first one (same output shapes). Returns one row per name.
    """
    targets = make_targets(next(iter(models.values()))[0], x)
    optimizers = {k: make_optimizer(m) for k, (m, _) in models.items()}
    step_times: dict[str, list[float]] = {k: [] for k in models}
    infer_times: dict[str, list[float]] = {k: [] for k in models}
    extra: dict[str, dict] = {}
    for key, (m, reference) in models.items():
        with _mode(reference):
            m.train()
            extra[key] = {"saved_bytes": saved_tensor_bytes(m, x, targets)}
    for i in range(warmup + steps):
        for key, (m, reference) in models.items():
            with _mode(reference):
                m.train()
                _sync(x.device)
                start = time.perf_counter()
                train_step(m, optimizers[key], x, targets)
                _sync(x.device)
            if i >= warmup:
                step_times[key].append(time.perf_counter() - start)
    for key, (m, reference) in models.items():
        with _mode(reference):
            extra[key]["peak_memory_bytes"] = peak_step_memory(m, optimizers[key], x, targets)
            extra[key]["params"] = sum(p.numel() for p in m.parameters())
    for m, _ in models.values():
        m.eval()
    with torch.inference_mode():
        for i in range(warmup + runs):
            for key, (m, reference) in models.items():
                with _mode(reference):
                    _sync(x.device)
                    start = time.perf_counter()
                    m(x)
                    _sync(x.device)
                if i >= warmup:
                    infer_times[key].append(time.perf_counter() - start)
    return {k: _summary(k, x.shape[0], step_times[k], infer_times[k], **extra[k]) for k in models}


def compare_naive(
    model: nn.Module, x: Tensor, steps: int = 10, warmup: int = 3, runs: int = 20
) -> tuple[dict, dict, dict]:
    """Lean vs naive binarizers on two identical copies of ``model``, timed in alternation (same noise).

    Returns the lean row, the naive row and the ratios ``lean / naive``.
    """
    rows = compare_interleaved({"lean": (model, False), "naive": (copy.deepcopy(model), True)}, x, steps, warmup, runs)
    return rows["lean"], rows["naive"], ratios(rows["lean"], rows["naive"])


def saved_bytes_per_unit(model: nn.Module, x: Tensor, targets: Outputs) -> dict[str, dict]:
    """Saved-for-backward bytes attributed to each binary unit (binarizers, op, norm, bypass) in one forward.

    A storage counts once, for the innermost unit running when autograd first saves it; storages saved outside
    every unit (stem, LayerNorms, activations between units, heads, loss) go to ``"(outside units)"``.
    Returns ``name -> {"bytes", "input_numel", "in_channels", "out_channels"}`` in forward order.
    """
    from bindense.binary.layers import _BinaryUnit

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    owner: dict[int, tuple[str, int]] = {}
    stack: list[str] = []
    units: dict[str, dict] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _BinaryUnit):

            def pre(mod, args, name=name):
                stack.append(name)
                unit = units.setdefault(name, {"bytes": 0, "input_numel": 0, "in_channels": args[0].shape[1]})
                unit["input_numel"] += args[0].numel()  # summed over calls (a shared unit runs several times)
                unit.update(out_channels=getattr(mod, "out_channels", getattr(mod, "out_features", 0)))

            def post(mod, args, out):
                stack.pop()

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr != 0 and ptr not in owner:
            owner[ptr] = (stack[-1] if stack else "(outside units)", t.untyped_storage().nbytes())
        return t

    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_of(model(x), targets)
    finally:
        for h in handles:
            h.remove()
    loss.backward()
    model.zero_grad(set_to_none=True)
    units["(outside units)"] = {"bytes": 0, "input_numel": 0, "in_channels": 0, "out_channels": 0}
    for name, nbytes in owner.values():
        units[name]["bytes"] += nbytes
    return units


def unit_table(model: nn.Module, x: Tensor) -> tuple[str, dict]:
    """Per-unit saved-for-backward bytes: unfused (one node per binarizer) vs fused exact vs fused bf16.

    Units that differ only by their block index are grouped (``stages.2.*.pwconv1``); the byte columns are per
    unit, ``B/elem`` divides by the unit's input elements.
    """
    import re

    from bindense.binary.layers import configure_lean

    targets = make_targets(model, x)
    variants = {
        "unfused": configure_lean(copy.deepcopy(model), fused=False),
        "fused exact": configure_lean(copy.deepcopy(model), saved_activation="exact"),
        "fused bf16": configure_lean(copy.deepcopy(model), saved_activation="bf16"),
    }
    per = {k: saved_bytes_per_unit(m, x, targets) for k, m in variants.items()}
    groups: dict[str, dict] = {}
    for name, info in per["unfused"].items():
        key = re.sub(r"(stages\.\d+)\.\d+\.", r"\1.*.", name)
        g = groups.setdefault(key, {"count": 0, "input_numel": info["input_numel"], **{k: 0 for k in per}})
        g["count"] += 1
        for k in per:
            g[k] += per[k][name]["bytes"]
    header = ["unit", "n", "input", *[f"{k} KiB" for k in per], *[f"{k} B/elem" for k in per]]
    lines = [header]
    totals = {k: sum(u["bytes"] for u in per[k].values()) for k in per}
    for key, g in groups.items():
        n, numel = g["count"], g["input_numel"]
        lines.append(
            [key, str(n), str(numel)]
            + [f"{g[k] / n / 1024:.1f}" for k in per]
            + [f"{g[k] / n / numel:.2f}" if numel else "-" for k in per]
        )
    lines.append(["total (MiB)", "", ""] + [_mib(totals[k]) for k in per] + ["", "", ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    ]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "saved for backward per unit:\n" + "\n".join(text), {"groups": groups, "totals_bytes": totals}


def ratios(a: dict, b: dict) -> dict:
    """``a / b`` for time and memory (below 1: ``a`` is faster / smaller)."""
    out = {
        "step_time_ratio": a["step_time_s"] / b["step_time_s"],
        "peak_memory_ratio": a["peak_memory_bytes"] / b["peak_memory_bytes"],
        "latency_ratio": a["latency_s"] / b["latency_s"],
    }
    if a.get("saved_bytes") and b.get("saved_bytes"):
        out["saved_for_backward_ratio"] = a["saved_bytes"] / b["saved_bytes"]
    return {k: round(v, 4) for k, v in out.items()}


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


# ------------------------------------------------------------------------------------------------- configs


def compose(overrides: Sequence[str]):
    """The resolved ``conf/train.yaml`` with ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    os.environ.setdefault("PROJECT_ROOT", str(REPO))  # conf/paths reads it (data_dir, ...)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


def build_model(overrides: Sequence[str]) -> tuple[nn.Module, Any]:
    """Instantiate ``cfg.model`` of the composed config (nothing else is built)."""
    from hydra.utils import instantiate

    cfg = compose(overrides)
    return instantiate(cfg.model), cfg


def data_throughput(cfg, num_batches: int, workers: int) -> dict:
    """Data-loader throughput of ``cfg.data`` via ``scripts/benchmark_data.py``."""
    from hydra.utils import instantiate

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchmark_data import measure_throughput

    return measure_throughput(instantiate(cfg.data), num_batches, workers)


# ------------------------------------------------------------------------------------------------- output


def _mib(n: float) -> str:
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
                _mib(r["peak_memory_bytes"]),
                _mib(r.get("saved_bytes", 0)),
                f"{r['latency_s'] * 1e3:.1f}",
                f"{r['infer_throughput']:.2f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    ]
    text.insert(1, "-+-".join("-" * w for w in widths))
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
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


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
    p.add_argument("--deploy-size", type=int, nargs=2, default=(480, 480), metavar=("H", "W"))
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
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.binary_conv:
        from bindense.native import bench

        out = bench.run(threads=args.threads or 1, isa=args.isa, rounds=args.runs, warmup=args.warmup)
        print(json.dumps(out))
        return out
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    overrides = list(args.overrides)
    if args.deploy:
        from bindense.export.deploy import main_deploy

        return main_deploy(overrides, build_model, args)
    if args.compare_naive and not overrides:
        overrides = list(NAIVE_DEFAULT_OVERRIDES)
    if args.compare_naive and args.vs:
        raise SystemExit("benchmark.py: --compare-naive and --vs are two separate comparisons; run one at a time")
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, args.height, args.width, device=device)
    model, cfg = build_model(overrides)
    model = model.to(device)
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
        other, _ = build_model(other_overrides)
        pair = {name: (model, False), other_name: (other.to(device), False)}
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
        try:
            tp = data_throughput(cfg, args.data_batches, args.data_workers)
        except ImportError as err:  # scripts/benchmark_data.py is provided by the data module
            tp = {"error": f"scripts/benchmark_data.py unavailable: {err}"}
        result["data_throughput"] = tp
        text += "\ndata throughput: " + ", ".join(f"{k} {v}" for k, v in tp.items())
    out = args.out or REPO / "logs" / "benchmark" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"device {device} ({result['environment']['threads']} threads), input {tuple(x.shape)}")
    print(text)
    print(f"results written to {out}")
    print(json.dumps(last or {k: rows[0][k] for k in ("step_time_s", "peak_memory_bytes", "latency_s")}))
    return result


if __name__ == "__main__":
    main()
