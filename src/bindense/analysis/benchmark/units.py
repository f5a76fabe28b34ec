"""Saved-for-backward bytes per binary unit, unfused vs fused (``scripts/benchmark.py --units``)."""

from __future__ import annotations

import copy
import re

import torch
from torch import Tensor, nn

from bindense.analysis.benchmark.measure import Outputs, loss_of, make_targets
from bindense.analysis.benchmark.report import mib


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
    lines.append(["total (MiB)", "", ""] + [mib(totals[k]) for k in per] + ["", "", ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    ]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "saved for backward per unit:\n" + "\n".join(text), {"groups": groups, "totals_bytes": totals}
