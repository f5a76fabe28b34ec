"""Train a dense-prediction model: ``python train.py [experiment=...] [group=option ...] [key=value ...]``.

With no arguments: BiDense (nano UperNet) on the synthetic scenes, on CPU, in a few minutes.
``python train.py -m ...`` runs a Hydra multirun sweep (one W&B group per sweep). See docs/USAGE.md.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
from bindense.process import configure_process  # noqa: E402

# before torch is imported: idle OpenMP threads spin briefly then sleep, freed memory kept (docs/TRAINING.md section 4)
configure_process()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bindense.lit.pipeline import train  # noqa: E402
from bindense.utils.run import apply_extras  # noqa: E402
from bindense.utils.rundir import refuse_finished_cli_dir  # noqa: E402

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``optimized_metric`` for sweepers."""
    apply_extras(cfg)
    try:
        metrics, _ = train(cfg)
    except Exception as err:  # into the job's log, where scripts/summarize_sweep.py finds it
        log.error("training failed: %s: %s", type(err).__name__, err)
        raise
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


if __name__ == "__main__":
    refuse_finished_cli_dir(sys.argv[1:])  # before Hydra writes into a finished run's directory
    main()
