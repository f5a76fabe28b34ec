"""Timing of the native training kernels on every ISA path (``scripts/benchmark.py --train-kernels``).

Each kernel of :mod:`bindense.binary.kernels` runs on one activation shape per row, once per round on every ISA path
this CPU has, in turn (interleaved, so that load changes hit them alike); the medians are reported beside
``torch.add(x, g, out=y)``, which moves the same bytes as DAB's backward (two reads, one write) and so anchors
the memory bandwidth. Every path must return the same bits as the first (tests/test_binary_kernels.py checks the
values against the formulas). docs/TRAINING.md section 5 shows the table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from bindense import native as native_isas
from bindense.binary import kernels as K

#: (N, C, H, W): the default run's full-resolution head input (batch 8, 128x160) and a ConvNeXt-T stage-0
#: ``pwconv2`` input at 256x256, batch 2.
SHAPES = ((8, 32, 128, 160), (2, 384, 64, 64))
KERNELS = ("dab_forward", "dab_rebuild", "dab_backward", "dab_backward_rebuild", "weight_forward", "weight_rebuild",
           "act_forward", "act_backward")  # fmt: skip


def _calls(shape: tuple[int, ...], isa: str, g: torch.Generator) -> dict[str, tuple[Callable, Callable]]:
    """Per kernel on ``isa``: ``(prepare, run)``; ``run(*prepare())`` is timed, ``prepare`` is not (DAB's backward
    writes into its gradient, so it gets a fresh copy each call)."""
    c = shape[1]
    x, grad = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    a, k, b = (torch.rand(1, c, 1, 1, generator=g) for _ in range(3))
    w = torch.randn(c, c, 3, 3, generator=g) * 0.1
    b1, slope = torch.randn(1, c, 1, 1, generator=g) * 0.1, torch.full((c,), 0.25)
    *_, alpha, thr = K.dab_forward(x, a, k, b, isa)
    _, scale, _ = K.weight_forward(w, True, isa)

    def nothing() -> tuple:
        return ()

    return {
        "dab_forward": (nothing, lambda: K.dab_forward(x, a, k, b, isa)[0]),
        "dab_rebuild": (nothing, lambda: K.dab_rebuild(x, thr, alpha, isa)),
        "dab_backward": (lambda: (grad.clone(),), lambda fresh: K.dab_backward(x, thr, fresh, alpha, isa)[0]),
        # the node's backward: DAB's gradient and the binarized input rebuilt (compared here) in one pass over x
        "dab_backward_rebuild": (
            lambda: (grad.clone(),),
            lambda fresh: K.dab_backward(x, thr, fresh, alpha, isa, True)[3],
        ),
        "weight_forward": (nothing, lambda: K.weight_forward(w, True, isa)[0]),
        "weight_rebuild": (nothing, lambda: K.weight_rebuild(w, scale, isa)),
        "act_forward": (nothing, lambda: K.act_forward(x, b1, slope, b1, isa)),
        "act_backward": (nothing, lambda: K.act_backward(x, b1, slope, grad, isa)[0]),
    }


def _timed(prepare: Callable, run: Callable) -> tuple[float, torch.Tensor]:
    args = prepare()
    t0 = time.perf_counter()
    out = run(*args)
    return (time.perf_counter() - t0) * 1e3, out


def train_kernels(shapes=SHAPES, threads: int = 2, rounds: int = 15, warmup: int = 2, seed: int = 0) -> list[dict]:
    """Median wall ms of every kernel on every ISA path for each shape, and of the ``torch.add`` anchor."""
    isas = [i for i in native_isas.supported_isas() if i != "torch"]
    if not isas:
        raise RuntimeError("--train-kernels needs the native extension (python -m bindense.native builds it)")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for shape in shapes:
            per_isa = {isa: _calls(shape, isa, torch.Generator().manual_seed(seed)) for isa in isas}
            x, g = torch.randn(shape), torch.randn(shape)
            y = torch.empty(shape)
            times: dict[tuple[str, str], list[float]] = {}
            for r in range(warmup + rounds):
                t0 = time.perf_counter()
                torch.add(x, g, out=y)
                if r >= warmup:
                    times.setdefault(("add", "torch"), []).append((time.perf_counter() - t0) * 1e3)
                for name in KERNELS:
                    outs = {}
                    for isa in isas:
                        ms, outs[isa] = _timed(*per_isa[isa][name])
                        if r >= warmup:
                            times.setdefault((name, isa), []).append(ms)
                    if r == 0 and any(not torch.equal(o, outs[isas[0]]) for o in outs.values()):
                        raise RuntimeError(f"{name} {shape}: the ISA paths {isas} disagree")
            for (name, isa), ms in times.items():
                rows.append({"shape": list(shape), "kernel": name, "isa": isa, "threads": threads,
                             "ms": round(statistics.median(ms), 3)})  # fmt: skip
    finally:
        torch.set_num_threads(old)
    return rows


def format_rows(rows: list[dict]) -> str:
    """A markdown table per shape: kernels down, ISA paths across, the ``torch.add`` anchor last."""
    isas = list(dict.fromkeys(r["isa"] for r in rows if r["isa"] != "torch"))
    lines = []
    for shape in dict.fromkeys(tuple(r["shape"]) for r in rows):
        here = {(r["kernel"], r["isa"]): r["ms"] for r in rows if tuple(r["shape"]) == shape}
        threads = next(r["threads"] for r in rows)
        lines += [f"| {list(shape)}, {threads} threads, ms | " + " | ".join(isas) + " |",
                  "|---|" + "---:|" * len(isas)]  # fmt: skip
        lines += [f"| {name} | " + " | ".join(f"{here[name, i]:.2f}" for i in isas) + " |" for name in KERNELS]
        lines += [f"| torch.add(x, g, out=y) (same bytes as dab_backward) | {here['add', 'torch']:.2f} |", ""]
    return "\n".join(lines)
