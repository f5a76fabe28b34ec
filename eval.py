"""Evaluate a checkpoint: ``python eval.py experiment=<as trained> ckpt_path=<run>/checkpoints/<file>.ckpt``.

Writes ``metrics.json`` (and a prediction panel) in the eval run directory; ``split=test`` uses the
datamodule's test split. See docs/USAGE.md#evaluation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
from bindense.process import configure_process  # noqa: E402

# before torch is imported: idle OpenMP threads spin briefly then sleep, freed memory kept (docs/TRAINING.md section 4)
configure_process()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bindense.lit.pipeline import evaluate  # noqa: E402
from bindense.utils.run import apply_extras  # noqa: E402

log = logging.getLogger("eval")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval.yaml")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    apply_extras(cfg)
    try:
        evaluate(cfg)
    except Exception as err:  # into the job's log
        log.error("evaluation failed: %s: %s", type(err).__name__, err)
        raise


if __name__ == "__main__":
    main()
