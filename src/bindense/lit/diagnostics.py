"""BNN training diagnostics, logged once per epoch (see docs/RESEARCH.md):

- ``bnn/flip_ratio/<stage>`` and ``bnn/flip_ratio``: fraction of binary weights whose sign changed since the
  previous epoch end (the first epoch compares with the weights at the start of training), as larq's
  FlipRatio but epoch to epoch;
- ``bnn/entropy/<layer>`` and ``bnn/entropy``: mean channel entropy (bits) of each activation binarizer's +-1
  output over the first ``entropy_batches`` validation batches (bindense.analysis.entropy);
- W&B histograms (only when a WandbLogger is attached): ``bnn/latent/<stage>`` (latent binary weights),
  ``bnn/threshold/rsign`` (``-beta_c``), ``bnn/threshold/dab`` (``k_c mean(x) + b_c`` per sample and
  channel) and ``bnn/scale/dab`` (``exp(a_c (mean|x - t| - 1))``), the DAB values measured on the same
  validation batches.

A *stage* is the first ``stage_depth`` components of a unit's module name (``backbone.stages.1``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor, nn

from bindense.analysis.entropy import EntropyRecorder, activation_binarizers
from bindense.binary import DAB, RSign
from bindense.binary.quantizers import dab_statistics


def binary_weight_units(net: nn.Module) -> dict[str, nn.Module]:
    """``{name: unit}`` of the units with 1-bit weights (their ``weight`` is the latent weight)."""
    return {n: m for n, m in net.named_modules() if getattr(m, "weight_bits", 32) == 1 and hasattr(m, "weight")}


def stage_of(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth]) or name


@torch.no_grad()
def weight_signs(units: dict[str, nn.Module]) -> dict[str, Tensor]:
    """Boolean ``binary weight > 0`` of every unit (the sign the forward pass uses)."""
    return {n: (u.binary_weight() > 0).flatten() for n, u in units.items()}


def flip_ratios(before: dict[str, Tensor], after: dict[str, Tensor], depth: int) -> dict[str, float]:
    """``{stage: flipped / total}`` plus ``""`` for all units together."""
    flipped: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for name, signs in after.items():
        if name not in before or before[name].shape != signs.shape:
            continue
        n_flip = int((before[name] != signs).sum())
        for key in (stage_of(name, depth), ""):
            flipped[key] += n_flip
            total[key] += signs.numel()
    return {k: flipped[k] / total[k] for k in total if total[k]}


class BNNDiagnostics(Callback):
    """Flip ratio, binarizer output entropy and (W&B) histograms once per epoch; each part switchable.

    Args:
        flip_ratio: log ``bnn/flip_ratio[/<stage>]`` at each training epoch end.
        entropy: log ``bnn/entropy[/<layer>]`` from the first ``entropy_batches`` validation batches.
        histograms: log W&B histograms of latent weights, thresholds and scales.
        entropy_batches: validation batches measured per epoch (the cost of the hooks).
        stage_depth: module-name components that form a stage.
        per_layer: also log the entropy of every binarizer (else per stage and overall only).
    """

    def __init__(
        self,
        flip_ratio: bool = True,
        entropy: bool = True,
        histograms: bool = True,
        entropy_batches: int = 2,
        stage_depth: int = 3,
        per_layer: bool = True,
    ) -> None:
        super().__init__()
        self.flip_ratio, self.entropy, self.histograms = flip_ratio, entropy, histograms
        self.entropy_batches = max(1, int(entropy_batches))
        self.stage_depth = int(stage_depth)
        self.per_layer = per_layer
        self._signs: dict[str, Tensor] = {}
        self._recorder: EntropyRecorder | None = None
        self._dab: dict[str, list[Tensor]] = defaultdict(list)
        self._dab_handles: list[Any] = []
        self.last: dict[str, float] = {}  # the scalars of the last epoch (for tests and summaries)

    @staticmethod
    def _net(pl_module: LightningModule) -> nn.Module:
        return getattr(pl_module, "net", pl_module)

    @staticmethod
    def _wandb(trainer: Trainer) -> list[WandbLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    # ----------------------------------------------------------------------------- flip ratio
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.flip_ratio:
            self._signs = weight_signs(binary_weight_units(self._net(pl_module)))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        net = self._net(pl_module)
        logged: dict[str, float] = {}
        if self.flip_ratio:
            signs = weight_signs(binary_weight_units(net))
            ratios = flip_ratios(self._signs, signs, self.stage_depth)
            self._signs = signs
            logged = {f"bnn/flip_ratio/{k}" if k else "bnn/flip_ratio": v for k, v in ratios.items()}
            if logged:
                pl_module.log_dict(logged, on_step=False, on_epoch=True, sync_dist=True)
        if self.histograms and self._wandb(trainer):
            self._log_histograms(trainer, self._latent_histograms(net))
        self.last.update(logged)

    def _latent_histograms(self, net: nn.Module) -> dict[str, Tensor]:
        per_stage: dict[str, list[Tensor]] = defaultdict(list)
        for name, unit in binary_weight_units(net).items():
            per_stage[stage_of(name, self.stage_depth)].append(unit.weight.detach().flatten())
        values = {f"bnn/latent/{k}": torch.cat(v) for k, v in per_stage.items()}
        rsign = [m.bias.detach().flatten().neg() for m in net.modules() if isinstance(m, RSign)]
        if rsign:
            values["bnn/threshold/rsign"] = torch.cat(rsign)
        return values

    def _log_histograms(self, trainer: Trainer, values: dict[str, Tensor]) -> None:
        import wandb

        if not values or not trainer.is_global_zero:
            return
        hists = {k: wandb.Histogram(v.float().cpu().numpy(), num_bins=64) for k, v in values.items() if v.numel()}
        for logger in self._wandb(trainer):
            logger.log_metrics(hists, step=trainer.global_step)

    # ----------------------------------------------------------------------------- entropy and DAB values
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not (self.entropy or self.histograms):
            return
        net = self._net(pl_module)
        if self.entropy:
            self._recorder = EntropyRecorder(activation_binarizers(net), mode="after").__enter__()
        if self.histograms and self._wandb(trainer):
            self._dab.clear()
            for m in net.modules():
                if isinstance(m, DAB):
                    self._dab_handles.append(m.register_forward_hook(self._dab_hook))

    def _dab_hook(self, module: DAB, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        with torch.no_grad():
            x = inputs[0].detach()
            dims = tuple(range(1, x.dim() - 1)) if module.channels_last else tuple(range(2, x.dim()))
            _, mean_x, _, scale = dab_statistics(x, module.a, module.k, module.b, dims)
            threshold = module.k * mean_x + module.b
            self._dab["bnn/threshold/dab"].append(threshold.flatten())
            self._dab["bnn/scale/dab"].append(scale.flatten())

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx + 1 >= self.entropy_batches:
            self._remove_hooks(keep_recorder=True)

    def _remove_hooks(self, keep_recorder: bool) -> None:
        for h in self._dab_handles:
            h.remove()
        self._dab_handles.clear()
        if self._recorder is not None:
            self._recorder.__exit__()
            if not keep_recorder:
                self._recorder = None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        recorder = self._recorder
        self._remove_hooks(keep_recorder=False)
        logged: dict[str, float] = {}
        if recorder is not None and recorder.order:
            per_layer = {name: float(recorder.stats[name].after().mean()) for name in recorder.order}
            per_stage: dict[str, list[float]] = defaultdict(list)
            for name, value in per_layer.items():
                per_stage[stage_of(name, self.stage_depth)].append(value)
            logged["bnn/entropy"] = sum(per_layer.values()) / len(per_layer)
            logged.update({f"bnn/entropy_stage/{k}": sum(v) / len(v) for k, v in per_stage.items()})
            if self.per_layer:
                logged.update(
                    {f"bnn/entropy/{k.removesuffix('.activation_binarizer')}": v for k, v in per_layer.items()}
                )
            pl_module.log_dict(logged, on_step=False, on_epoch=True, sync_dist=True)
        if self._dab:
            self._log_histograms(trainer, {k: torch.cat(v) for k, v in self._dab.items()})
            self._dab.clear()
        self.last.update(logged)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._remove_hooks(keep_recorder=False)
