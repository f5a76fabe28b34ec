"""Channel-wise information entropy of activations before and after each binarizer (BiDense's Fig. 3).

For every 1-bit activation binarizer of a net, over a set of batches:

- **after**: the binarizer's output takes two values per channel; with ``p_c`` the fraction of the +1
  decisions of channel ``c`` (over all samples and positions), its entropy is
  ``H(p_c) = -p_c log2 p_c - (1 - p_c) log2 (1 - p_c)`` bits (at most 1 bit);
- **before**: the binarizer's full-precision input, estimated with a histogram per channel of ``bins``
  equal-width bins spanning that channel's min .. max over the same batches (two passes: range, then
  counts), entropy ``-sum_i q_i log2 q_i`` bits (at most ``log2(bins)`` bits).

A layer's value is the mean over its channels; the *first binarization* is the binarizer that runs first in
the forward pass. See docs/RESEARCH.md for the method and the numbers measured on the synthetic scenes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from bindense.binary import AdaBinActivation

#: default number of histogram bins of the "before" estimate
DEFAULT_BINS = 32


# ----------------------------------------------------------------------------- entropy of distributions
def entropy_bits(counts: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy in bits of the histograms ``counts`` along ``dim`` (empty bins contribute 0)."""
    counts = counts.double()
    total = counts.sum(dim, keepdim=True)
    p = counts / total.clamp(min=1)
    terms = torch.where(p > 0, -p * torch.log2(p.clamp(min=1e-300)), torch.zeros_like(p))
    return terms.sum(dim)


def binary_entropy_bits(p: Tensor) -> Tensor:
    """Entropy in bits of a +-1 variable with ``P(+1) = p`` (0 at p = 0 or 1, 1 bit at p = 1/2)."""
    p = p.double()
    return entropy_bits(torch.stack([p, 1 - p], -1))


def channel_axis(binarizer: nn.Module) -> int:
    """Channel axis of a binarizer's input: last for token (channels-last) binarizers, else 1."""
    return -1 if getattr(binarizer, "channels_last", False) else 1


def _channels_first(x: Tensor, axis: int) -> Tensor:
    """``x`` as ``(C, everything else)``."""
    return x.detach().movedim(axis, 0).reshape(x.shape[axis], -1)


def _adabin_decision(binarizer: nn.Module, out: Tensor) -> Tensor:
    return out / binarizer.alpha - binarizer.beta > 0  # levels alpha * (+-1 + beta)


#: the +1 decision of a binarizer from its output, for binarizers whose output levels are not +-scale
DECISIONS: dict[type, Callable[[nn.Module, Tensor], Tensor]] = {AdaBinActivation: _adabin_decision}


def binary_decision(binarizer: nn.Module, out: Tensor) -> Tensor:
    """Boolean tensor: where the binarizer chose +1 (``out > 0`` for sign-times-positive-scale outputs)."""
    rule = DECISIONS.get(type(binarizer))
    return rule(binarizer, out) if rule is not None else out > 0


def activation_binarizers(net: nn.Module) -> dict[str, nn.Module]:
    """``{name: activation binarizer}`` of every unit whose input is binarized to 1 bit (registration order)."""
    return {
        f"{name}.activation_binarizer": m.activation_binarizer
        for name, m in net.named_modules()
        if getattr(m, "input_bits", 32) == 1 and hasattr(m, "activation_binarizer")
    }


# ----------------------------------------------------------------------------- accumulation with hooks
@dataclass
class LayerStats:
    """Running per-channel statistics of one binarizer."""

    positives: Tensor | None = None  # (C,) count of +1 decisions
    count: int = 0  # values per channel seen
    lo: Tensor | None = None  # (C,) input min (range pass)
    hi: Tensor | None = None  # (C,) input max
    hist: Tensor | None = None  # (C, bins) input counts (histogram pass)

    def after(self) -> Tensor:
        """Per-channel entropy (bits) of the +-1 output."""
        if self.positives is None or self.count == 0:
            raise ValueError("no activations recorded")
        return binary_entropy_bits(self.positives.double() / self.count)

    def before(self) -> Tensor:
        """Per-channel histogram entropy (bits) of the full-precision input."""
        if self.hist is None:
            raise ValueError("no histogram recorded (run the histogram pass)")
        return entropy_bits(self.hist)


@dataclass
class EntropyRecorder:
    """Forward hooks on binarizers that accumulate :class:`LayerStats`; ``mode`` selects what is recorded.

    ``"after"``: +1 counts only (cheap, what the training diagnostics use); ``"range"``: input min / max and
    +1 counts; ``"hist"``: input histograms within the recorded ranges. ``order`` lists the binarizers in the
    order they first ran.
    """

    binarizers: Mapping[str, nn.Module]
    bins: int = DEFAULT_BINS
    mode: str = "after"
    stats: dict[str, LayerStats] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    _handles: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in ("after", "range", "hist"):
            raise ValueError(f"mode must be 'after', 'range' or 'hist', got {self.mode!r}")
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {self.bins}")

    def __enter__(self) -> EntropyRecorder:
        for name, module in self.binarizers.items():
            self.stats.setdefault(name, LayerStats())
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if name not in self.order:
                self.order.append(name)
            self._record(self.stats[name], module, inputs[0], output)

        return hook

    @torch.no_grad()
    def _record(self, st: LayerStats, module: nn.Module, x: Tensor, out: Tensor) -> None:
        axis = channel_axis(module)
        if self.mode in ("after", "range"):
            pos = _channels_first(binary_decision(module, out), axis).sum(1)
            st.positives = pos if st.positives is None else st.positives + pos
            st.count += out.numel() // out.shape[axis]
        flat = _channels_first(x, axis).float()
        if self.mode == "range":
            lo, hi = flat.amin(1), flat.amax(1)
            st.lo = lo if st.lo is None else torch.minimum(st.lo, lo)
            st.hi = hi if st.hi is None else torch.maximum(st.hi, hi)
        elif self.mode == "hist":
            if st.lo is None or st.hi is None:
                raise RuntimeError("histogram pass before the range pass")
            channels = flat.shape[0]
            width = (st.hi - st.lo).clamp(min=1e-12)[:, None]
            idx = ((flat - st.lo[:, None]) / width * self.bins).long().clamp(0, self.bins - 1)
            idx = idx + torch.arange(channels, device=idx.device)[:, None] * self.bins
            counts = torch.bincount(idx.flatten(), minlength=channels * self.bins).view(channels, self.bins)
            st.hist = counts if st.hist is None else st.hist + counts


def _mean(x: Tensor) -> float:
    return float(x.mean())


@torch.no_grad()
def measure_entropy(
    net: nn.Module,
    batches: Callable[[], Iterable[Tensor]],
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Average channel entropy (bits) before and after every 1-bit activation binarizer of ``net``.

    ``batches()`` yields input images (called twice: range pass, histogram pass). Returns
    ``{"bins", "layers": [{"name", "channels", "before", "after"}, ...] (forward order),
    "first_binarization": {"layer", "before", "after"}, "mean": {"before", "after"}}``.
    """
    binarizers = activation_binarizers(net)
    if not binarizers:
        raise ValueError(f"{type(net).__name__} has no 1-bit activation binarizer (a full-precision model?)")
    net.eval()
    stats: dict[str, LayerStats] = {}
    order: list[str] = []
    for mode in ("range", "hist"):
        with EntropyRecorder(binarizers, bins=bins, mode=mode, stats=stats, order=order):
            for images in batches():
                net(images)
    if not order:
        raise ValueError("no batch reached a binarizer (an empty split?)")
    layers = [
        {
            "name": name,
            "channels": int(stats[name].positives.numel()),
            "before": _mean(stats[name].before()),
            "after": _mean(stats[name].after()),
        }
        for name in order
    ]
    first = layers[0]
    return {
        "bins": bins,
        "before_estimate": f"histogram, {bins} equal-width bins per channel over its min..max on the split",
        "layers": layers,
        "first_binarization": {"layer": first["name"], "before": first["before"], "after": first["after"]},
        "mean": {
            "before": sum(r["before"] for r in layers) / len(layers),
            "after": sum(r["after"] for r in layers) / len(layers),
        },
        "max_bits": {"before": math.log2(bins), "after": 1.0},
    }


@torch.no_grad()
def first_binarizer_maps(net: nn.Module, image: Tensor) -> tuple[str, Tensor, Tensor]:
    """``(name, before, after)``: the channel-mean maps (H, W) of the first binarizer's input and of its
    +-1 decision (as +-1) on one image ``(1, 3, H, W)``."""
    binarizers = activation_binarizers(net)
    if not binarizers:
        raise ValueError(f"{type(net).__name__} has no 1-bit activation binarizer")
    seen: list[tuple[str, Tensor, Tensor]] = []

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if not seen:
                axis = channel_axis(module)
                sign = binary_decision(module, output).float() * 2 - 1
                seen.append((name, inputs[0].detach().mean(axis)[0], sign.mean(axis)[0]))

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in binarizers.items()]
    try:
        net.eval()
        net(image)
    finally:
        for h in handles:
            h.remove()
    return seen[0]


# ----------------------------------------------------------------------------- checkpoints, report, figure
SPLITS = ("val", "test")


def load_checkpoint_net(path: str | Path) -> tuple[nn.Module, DictConfig]:
    """The net of a bindense checkpoint (weights loaded, eval mode) and its run config."""
    from bindense.utils.checkpoint import build_net, find_run_config, load_net_weights, read_checkpoint

    path, ckpt = read_checkpoint(path)
    cfg = find_run_config(path, ckpt)
    net = load_net_weights(build_net(cfg.model), ckpt, path)
    return net.eval(), cfg


def split_loader(cfg: DictConfig, split: str, num_workers: int = 0) -> Any:
    """The DataLoader of ``split`` built from a run config's ``data`` node (not shuffled)."""
    import hydra

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.get("data") is None:
        raise ValueError("the checkpoint's run config has no 'data' node: cannot build the split")
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data["num_workers"] = num_workers
    dm = hydra.utils.instantiate(data, _convert_="all")
    dm.prepare_data()
    dm.setup("validate" if split == "val" else "test")
    return dm.val_dataloader() if split == "val" else dm.test_dataloader()


def method_label(cfg: DictConfig, path: Path) -> str:
    method = (cfg.get("method") or {}).get("name")
    return str(method) if method else path.stem


def entropy_of_checkpoints(
    paths: list[str | Path],
    split: str = "val",
    bins: int = DEFAULT_BINS,
    max_batches: int | None = None,
    num_workers: int = 0,
) -> tuple[list[dict[str, Any]], list[tuple[str, Tensor, Tensor]]]:
    """Per checkpoint: the :func:`measure_entropy` result (plus ``ckpt``, ``label``, ``split``) and the
    first binarizer's maps on the split's first image."""
    results, maps = [], []
    for p in paths:
        net, cfg = load_checkpoint_net(p)
        loader = split_loader(cfg, split, num_workers)

        def batches(loader=loader):
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                yield batch["image"]

        result = measure_entropy(net, batches, bins=bins)
        label = method_label(cfg, Path(p))
        results.append({"ckpt": str(p), "label": label, "split": split, **result})
        first_image = next(iter(batches()))[:1]
        _, before, after = first_binarizer_maps(net, first_image)
        maps.append((label, before, after))
    return results, maps


def plot_entropy(results: list[dict[str, Any]], maps: list[tuple[str, Tensor, Tensor]], path: str | Path) -> Path:
    """Fig. 3 layout: bars of the first binarization's entropy before / after per method, the mean over all
    binarizers, and the channel-mean maps before / after the first binarizer of each method."""
    from matplotlib.figure import Figure

    n = len(results)
    fig = Figure(figsize=(4.5 + 2.2 * n, 4.6))
    grid = fig.add_gridspec(2, 2 + n, width_ratios=[2.2, 2.2] + [1.0] * n)
    labels = [r["label"] for r in results]
    x = torch.arange(n).numpy()
    for col, (key, title) in enumerate(
        [("first_binarization", "first binarization"), ("mean", "mean over binarizers")]
    ):
        ax = fig.add_subplot(grid[:, col])
        before = [r[key]["before"] for r in results]
        after = [r[key]["after"] for r in results]
        b1 = ax.bar(x - 0.2, before, 0.4, label="before (histogram)", color="#4878a8")
        b2 = ax.bar(x + 0.2, after, 0.4, label="after (+-1)", color="#d9822b")
        ax.bar_label(b1, fmt="%.2f", fontsize=7)
        ax.bar_label(b2, fmt="%.2f", fontsize=7)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel("mean channel entropy (bits)", fontsize=8)
        ax.set_title(title, fontsize=9)
        if col == 0:
            ax.legend(fontsize=7, loc="upper right")
    for i, (label, before, after) in enumerate(maps):
        for row, (m, name) in enumerate([(before, "before"), (after, "after")]):
            ax = fig.add_subplot(grid[row, 2 + i])
            img = m.float().cpu().numpy()
            ax.imshow(img if img.ndim == 2 else img[None], cmap="viridis")
            ax.set_title(f"{label}: {name}", fontsize=8)
            ax.axis("off")
    bins = results[0]["bins"] if results else DEFAULT_BINS
    fig.suptitle(
        f"Channel entropy of activations around the binarizers ({results[0]['split'] if results else ''} "
        f"split; before: {bins}-bin histograms)",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def entropy_report(
    paths: list[str | Path],
    out: str | Path,
    split: str = "val",
    bins: int = DEFAULT_BINS,
    max_batches: int | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Write ``entropy.json`` and ``entropy.png`` under ``out``; return the summary
    ``{ckpt: {"label", "first_binarization": {"before", "after"}}}``."""
    if not paths:
        raise ValueError("no checkpoint given")
    results, maps = entropy_of_checkpoints(paths, split, bins, max_batches, num_workers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "entropy.json").write_text(json.dumps({"checkpoints": results}, indent=2))
    plot_entropy(results, maps, out / "entropy.png")
    return {
        r["ckpt"]: {
            "label": r["label"],
            "first_binarization": {
                "before": r["first_binarization"]["before"],
                "after": r["first_binarization"]["after"],
            },
        }
        for r in results
    }
