"""Resume: interrupting after epoch 1 and resuming from last.ckpt ends with the same weights as an
uninterrupted 2-epoch run (fixed seed, deterministic CPU)."""

from __future__ import annotations

import signal

import pytest
import torch
from lightning.pytorch import Callback
from test_train import TINY, tiny_train

from bindense.lit.pipeline import train
from bindense.utils.compose import compose_config

RESUME = ["trainer.max_epochs=2", "++trainer.limit_train_batches=3", "trainer.deterministic=true", "seed=123"]


class InterruptAfterFirstEpoch(Callback):
    """Acts like Ctrl+C once the first epoch (training, validation, checkpoint) is over."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    _, full = tiny_train(tmp_path / "full", *RESUME)
    assert full["trainer"].current_epoch == 2

    handler = signal.getsignal(signal.SIGINT)
    try:
        cfg = compose_config("train", [*TINY, *RESUME], tmp_path / "part")
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown on KeyboardInterrupt
            train(cfg, extra_callbacks=[InterruptAfterFirstEpoch()])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after an interrupt
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 0
    assert "interrupted" in (tmp_path / "part" / "summary.json").read_text()

    metrics, resumed = tiny_train(tmp_path / "resumed", *RESUME, f"ckpt_path={last}")
    assert resumed["trainer"].current_epoch == 2
    a, b = weights(full["module"]), weights(resumed["module"])
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"
    assert metrics["val/seg/mIoU_best"] == pytest.approx(float(full["trainer"].callback_metrics["val/seg/mIoU_best"]))
