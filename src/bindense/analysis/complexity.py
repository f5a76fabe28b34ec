"""Complexity accounting of binary models, in the spirit of ``larq.models.summary``.

For a model and an input size (one image):

- parameters split by bit-width: a parameter is binary when it is the ``weight`` of a unit whose
  ``weight_bits == 1`` (read from the unit, never from names); everything else (biases, norms, binarizer
  parameters, full-precision convs) is 32-bit. Buffers (BN running statistics) are listed apart.
- memory: 1 bit per binary weight, 32 bits per full-precision parameter and buffer element.
- MACs from forward hooks: ``Conv2d``/``ConvTranspose2d``/``Linear`` and any module with a
  ``macs(inputs, output)`` method (the ViT attention matmuls). A MAC is binary (a BOP) when the op's
  ``input_bits`` and ``weight_bits`` are both 1; every other MAC is a FLOP. ``OPs = FLOPs + BOPs / 64``.
  Elementwise work (norms, activations, binarizer statistics, pooling, resizing, softmax) is not counted.
- the paper rule of docs/COMPLEXITY.md#paper-rule: every full-precision ``state_dict`` entry (shared modules once per
  position, BN buffers included) + binary weights / 32, with the final prediction conv weight counted as
  binary in binary models; ``paper_params_honest`` counts that weight as full precision.

The forward pass runs on a ``meta`` copy of the model by default (shapes only: instant at any size).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

FP_BITS = 32
BOP_COST = 64  # binary MACs per full-precision MAC (Bi-Real / ReActNet convention)


@dataclass
class LayerRow:
    """One row of the per-layer table (a module that owns parameters directly or performs MACs)."""

    name: str
    kind: str
    bits: str = "-"  # "input/weight" bits of an op, e.g. "1/1", "32/32"
    params_fp: int = 0
    params_binary: int = 0
    buffers: int = 0
    macs_fp: int = 0
    macs_binary: int = 0
    calls: int = 0

    @property
    def memory_bytes(self) -> float:
        return (self.params_binary + FP_BITS * (self.params_fp + self.buffers)) / 8


@dataclass
class ComplexityReport:
    """Per-layer rows and totals; :meth:`totals` is the JSON summary."""

    input_size: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    paper_params: float = 0.0
    paper_params_honest: float = 0.0

    def totals(self) -> dict[str, float | int | list[int]]:
        params_fp = sum(r.params_fp for r in self.rows)
        params_binary = sum(r.params_binary for r in self.rows)
        buffers = sum(r.buffers for r in self.rows)
        macs_fp = sum(r.macs_fp for r in self.rows)
        macs_binary = sum(r.macs_binary for r in self.rows)
        macs = macs_fp + macs_binary
        return {
            "input_size": list(self.input_size),
            "params_total": params_fp + params_binary,
            "params_fp": params_fp,
            "params_binary": params_binary,
            "buffers": buffers,
            "paper_params": round(self.paper_params, 2),
            "paper_params_honest": round(self.paper_params_honest, 2),
            "memory_bytes": (params_binary + FP_BITS * (params_fp + buffers)) / 8,
            "memory_fp32_bytes": FP_BITS * (params_fp + params_binary + buffers) / 8,
            "macs_fp": macs_fp,
            "macs_binary": macs_binary,
            "macs_total": macs,
            "binary_mac_fraction": macs_binary / macs if macs else 0.0,
            "flops": macs_fp,
            "bops": macs_binary,
            "ops": macs_fp + macs_binary / BOP_COST,
        }

    def to_json(self) -> str:
        return json.dumps(self.totals())

    def table(self, group_depth: int | None = None) -> str:
        """Fixed-width per-layer table (params, memory, MACs, calls) followed by the totals.

        ``group_depth`` aggregates rows by the first components of their names (e.g. 3).
        """
        rows = self.rows if group_depth is None else group_rows(self.rows, group_depth)
        head = (
            f"{'layer':<48} {'kind':<20} {'a/w bits':>8} {'fp params':>11} {'1b params':>11} {'buffers':>8} "
            f"{'mem KiB':>9} {'fp MACs':>15} {'1b MACs':>15} {'calls':>5}"
        )
        lines = [head, "-" * len(head)]
        for r in rows:
            lines.append(
                f"{r.name[-48:]:<48} {r.kind[:20]:<20} {r.bits:>8} {r.params_fp:>11,} {r.params_binary:>11,} "
                f"{r.buffers:>8,} {r.memory_bytes / 1024:>9.1f} {r.macs_fp:>15,} {r.macs_binary:>15,} {r.calls:>5}"
            )
        t = self.totals()
        lines += [
            "-" * len(head),
            f"input {tuple(self.input_size)}",
            f"params: total {t['params_total']:,} = fp {t['params_fp']:,} + binary {t['params_binary']:,}"
            f" (+ {t['buffers']:,} buffer elements)",
            f"paper-rule params: {t['paper_params'] / 1e3:,.2f} K (honest, final conv fp: "
            f"{t['paper_params_honest'] / 1e3:,.2f} K)",
            f"memory: {t['memory_bytes'] / 2**20:,.2f} MiB (all fp32: {t['memory_fp32_bytes'] / 2**20:,.2f} MiB, "
            f"x{t['memory_fp32_bytes'] / max(t['memory_bytes'], 1):.1f})",
            f"MACs: fp {t['macs_fp'] / 1e9:,.3f} G + binary {t['macs_binary'] / 1e9:,.3f} G "
            f"({100 * t['binary_mac_fraction']:.2f}% binarized)",
            f"OPs = FLOPs + BOPs/64 = {t['ops'] / 1e9:,.3f} G",
        ]
        return "\n".join(lines)


def _bits(module: nn.Module) -> tuple[int, int]:
    return getattr(module, "input_bits", FP_BITS), getattr(module, "weight_bits", FP_BITS)


def _is_binary_param(module: nn.Module, pname: str) -> bool:
    return pname == "weight" and getattr(module, "weight_bits", FP_BITS) == 1


def _conv_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    if isinstance(module, nn.ConvTranspose2d):  # every input pixel meets C_out/groups * k * k weights
        kh, kw = module.kernel_size
        return inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return int(module.macs(inputs, output))


def _counts_macs(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) or callable(getattr(module, "macs", None))


def paper_rule_params(model: nn.Module) -> tuple[float, float]:
    """(paper rule, honest) parameter counts of docs/COMPLEXITY.md#paper-rule, walking modules like ``state_dict`` does.

    Shared modules count once per position; BN buffers count; binary weights count 1/32. In the paper rule
    a module flagged ``paper_rule_binary`` (the final prediction conv) has its weight counted binary when the
    model contains any binary weight; the honest count keeps it full precision.
    """
    modules = list(model.named_modules(remove_duplicate=False))
    any_binary = any(getattr(m, "weight_bits", FP_BITS) == 1 for _, m in modules)
    paper = honest = 0.0
    for _, module in modules:
        tensors = [(n, p) for n, p in module._parameters.items() if p is not None]
        tensors += [
            (n, b) for n, b in module._buffers.items() if b is not None and n not in module._non_persistent_buffers_set
        ]
        for name, t in tensors:
            if _is_binary_param(module, name):
                paper += t.numel() / FP_BITS
                honest += t.numel() / FP_BITS
            elif name == "weight" and any_binary and getattr(module, "paper_rule_binary", False):
                paper += t.numel() / FP_BITS
                honest += t.numel()
            else:
                paper += t.numel()
                honest += t.numel()
    return paper, honest


def summarize(
    model: nn.Module,
    input_size: Sequence[int] = (1, 3, 480, 480),
    device: str | torch.device = "meta",
) -> ComplexityReport:
    """Complexity report of ``model`` for one forward pass on a zero input of ``input_size``.

    ``device="meta"`` runs a meta-device deep copy (shapes only, the model is untouched); any other device
    runs the model itself in eval mode under ``no_grad`` and restores its training flag.
    ``input_size`` is ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``; MACs are for the whole batch.
    """
    size = tuple(int(s) for s in input_size)
    if len(size) == 2:
        size = (1, 3, *size)
    elif len(size) == 3:
        size = (1, *size)
    report = ComplexityReport(input_size=size)
    report.paper_params, report.paper_params_honest = paper_rule_params(model)

    rows = _param_rows(model)
    run_model = model
    if str(device) == "meta":
        run_model = copy.deepcopy(model).to("meta")
    by_copy = dict(zip((id(m) for m in run_model.modules()), (id(m) for m in model.modules())))

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        row = rows[by_copy[id(module)]][1]
        macs = _conv_macs(module, inputs, output)
        a_bits, w_bits = _bits(module)
        if a_bits == 1 and w_bits == 1:
            row.macs_binary += macs
        else:
            row.macs_fp += macs
        row.calls += 1

    handles = [
        m.register_forward_hook(hook)
        for m in run_model.modules()
        if _counts_macs(m) and by_copy[id(m)] in rows and rows[by_copy[id(m)]][1].bits != "-"
    ]
    was_training = run_model.training
    run_model.eval()
    try:
        with torch.no_grad():
            param = next(run_model.parameters(), None)
            dev = param.device if param is not None else torch.device(device)
            run_model(torch.zeros(size, device=dev))
    finally:
        for h in handles:
            h.remove()
        run_model.train(was_training)
    report.rows = [row for _, row in rows.values()]
    return report


def _param_rows(model: nn.Module) -> dict[int, tuple[nn.Module, LayerRow]]:
    """One row per op (conv / linear / matmul, its binarizer and norm parameters folded in) and one per
    other module owning parameters or buffers; keyed by ``id(module)`` of the row's module."""
    rows: dict[int, tuple[nn.Module, LayerRow]] = {}
    ops: dict[str, LayerRow] = {}
    for name, module in model.named_modules():
        owner = None
        parts = name.split(".") if name else []
        for i in range(len(parts), 0, -1):  # nearest op ancestor (or the module itself)
            owner = ops.get(".".join(parts[:i]))
            if owner is not None:
                break
        if owner is None and _counts_macs(module):
            a_bits, w_bits = _bits(module)
            owner = LayerRow(name=name or "(model)", kind=type(module).__name__, bits=f"{a_bits}/{w_bits}")
            ops[name] = owner
            rows[id(module)] = (module, owner)
        params = [(n, p) for n, p in module._parameters.items() if p is not None]
        buffers = [
            b for n, b in module._buffers.items() if b is not None and n not in module._non_persistent_buffers_set
        ]
        if owner is None:
            if not params and not buffers:
                continue
            owner = LayerRow(name=name or "(model)", kind=type(module).__name__)
            rows[id(module)] = (module, owner)
        for pname, p in params:
            if _is_binary_param(module, pname):
                owner.params_binary += p.numel()
            else:
                owner.params_fp += p.numel()
        owner.buffers += sum(b.numel() for b in buffers)
    return rows


def group_rows(rows: Sequence[LayerRow], depth: int) -> list[LayerRow]:
    """Aggregate rows by the first ``depth`` components of their names (e.g. 3: ``backbone.stages.0``)."""
    groups: dict[str, LayerRow] = {}
    for r in rows:
        key = ".".join(r.name.split(".")[:depth])
        g = groups.setdefault(key, LayerRow(name=key, kind="(group)"))
        if g.bits == "-" and r.bits != "-":
            g.bits = r.bits
        elif r.bits not in ("-", g.bits):
            g.bits = "mixed"
        for f in ("params_fp", "params_binary", "buffers", "macs_fp", "macs_binary", "calls"):
            setattr(g, f, getattr(g, f) + getattr(r, f))
    return list(groups.values())
