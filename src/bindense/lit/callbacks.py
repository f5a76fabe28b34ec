"""Training callbacks: prediction panels written (and logged) at each evaluation, per-epoch seeding, a Ctrl+C that
always stops the run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from bindense.viz import IMAGENET_MEAN, IMAGENET_STD, save_prediction_panel


class PredictionPanels(Callback):
    """Render the first evaluation batch as a PNG panel (image | gt | pred per task) and log it.

    Files: ``dirpath/val_epoch{E:03d}.png`` each validation (not the sanity check), ``dirpath/test.png``.
    The same image goes to W&B (``val/panels``, ``test/panels``) and TensorBoard when they are loggers.
    Expects ``validation_step``/``test_step`` to return ``{"outputs": {task: prediction}, ...}``.
    """

    def __init__(
        self,
        dirpath: str | Path,
        num_samples: int = 4,
        every_n_epochs: int = 1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int | None = 255,
        max_depth: float | None = None,
    ) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)
        self.num_samples = int(num_samples)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.mean, self.std = tuple(mean), tuple(std)
        self.ignore_index = ignore_index
        self.max_depth = max_depth
        self.last_path: Path | None = None

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if epoch % self.every_n_epochs and not last:
            return
        self._render(trainer, pl_module, outputs, batch, "val", f"val_epoch{epoch:03d}.png")

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self._render(trainer, pl_module, outputs, batch, "test", "test.png")

    def _render(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Mapping, stage: str, name: str
    ) -> None:
        if not trainer.is_global_zero or not isinstance(outputs, Mapping) or "outputs" not in outputs:
            return
        tasks = list(getattr(pl_module, "tasks", outputs["outputs"].keys()))
        path = save_prediction_panel(
            self.dirpath / name,
            batch["image"],
            {t: batch[t] for t in tasks},
            {t: outputs["outputs"][t] for t in tasks},
            tasks,
            num_samples=self.num_samples,
            mean=self.mean,
            std=self.std,
            ignore_index=self.ignore_index,
            max_depth=self.max_depth,
            title=f"{stage} epoch {trainer.current_epoch}",
        )
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"{stage}/panels", images=[str(path)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                import numpy as np
                from PIL import Image

                img = np.asarray(Image.open(path).convert("RGB"))
                logger.experiment.add_image(f"{stage}/panels", img, trainer.global_step, dataformats="HWC")


class EpochSeed(Callback):
    """Make epoch ``e`` depend only on ``(seed, e)``, so a resumed run replays what an uninterrupted one does.

    At each training epoch start every RNG is seeded with ``seed + e`` and the train sampler gets its own
    generator with that seed (the shuffling order); at the epoch's first batch the RNGs are seeded again, so
    the training steps see the same random state whether the loader iterator was created before the epoch
    hooks (a run resumed from a checkpoint) or after them. Exact with ``num_workers=0``; with workers the
    worker seeds (hence augmentations) of a resumed epoch may differ.
    """

    def __init__(self, seed: int | None) -> None:
        super().__init__()
        self.seed = seed

    def _seed_everything(self, trainer: Trainer) -> int:
        seed = int(self.seed) + trainer.current_epoch
        seed_everything(seed, workers=True, verbose=False)
        return seed

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.seed is None:
            return
        seed = self._seed_everything(trainer)
        loaders = trainer.train_dataloader
        for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
            batch_sampler = getattr(loader, "batch_sampler", None)
            for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
                if sampler is not None and hasattr(sampler, "generator") and not hasattr(sampler, "set_epoch"):
                    sampler.generator = torch.Generator().manual_seed(seed)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.seed is not None and batch_idx == 0:
            self._seed_everything(trainer)


class InterruptGuard(Callback):
    """Ctrl+C stops the run even when Python swallows its KeyboardInterrupt.

    Python raises KeyboardInterrupt wherever the main thread happens to be; inside a finalizer (a weakref callback,
    ``__del__``) it is printed as "Exception ignored in ..." and lost, and training would go on. The handler
    installed here also records the key press, and the next batch boundary raises it again, so Lightning's
    graceful shutdown (and the run's ``interrupted`` status and resume hint) always follow (docs/RELIABILITY.md).
    """

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.pressed = True
        raise KeyboardInterrupt

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if threading.current_thread() is threading.main_thread() and self._previous is None:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def _check(self, *_: Any) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    on_train_batch_end = on_validation_batch_end = on_test_batch_end = _check
