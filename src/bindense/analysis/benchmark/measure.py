"""Training-step time, peak memory, saved-for-backward bytes and inference latency of one or more models.

docs/DEPLOY.md explains the method; :mod:`bindense.analysis.benchmark` is the command line around it.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from lightning import LightningDataModule
from torch import Tensor, nn

from bindense.binary.workspace import scratch

Outputs = dict[str, Tensor]


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
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)  # as conf/module/*.yaml


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
    """Peak tensor memory (bytes) of one training step above the memory live before it (with the scratch buffers
    the fused units keep between steps)."""
    optimizer.zero_grad(set_to_none=True)  # free last step's gradients outside the measured window
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        train_step(model, optimizer, x, targets)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - before
    # the fused units' scratch buffers (bindense.binary.workspace) are made again inside the window and stay: the
    # step's allocations count them from their first use on (and not those another model left)
    scratch().clear()
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
            if i == 0:  # includes a torch.compile model's compile time
                extra[key]["first_step_s"] = time.perf_counter() - start
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


def measure_throughput(datamodule: LightningDataModule, num_batches: int = 20, workers: int = 0) -> dict[str, Any]:
    """Iterate ``num_batches`` batches of the train loader of ``datamodule`` with ``workers`` processes.

    The first batch (worker start-up, file-system warm-up) is timed separately and excluded from the rate.

    Returns:
        ``{"samples_per_s", "batches_per_s", "batch_size", "workers", "num_batches", "first_batch_s"}``.
    """
    datamodule.num_workers = int(workers)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    n_batches, n_samples = 0, 0
    t1 = time.perf_counter()
    while n_batches < num_batches:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n_batches += 1
        n_samples += int(batch["image"].shape[0])
    elapsed = max(time.perf_counter() - t1, 1e-9)
    del it
    return {
        "samples_per_s": round(n_samples / elapsed, 2),
        "batches_per_s": round(n_batches / elapsed, 3),
        "batch_size": int(loader.batch_size),
        "workers": int(workers),
        "num_batches": n_batches,
        "first_batch_s": round(first, 3),
    }
