"""Run utilities: instantiation of config groups, W&B set-up, run files and summaries, result loading."""

from bindense.utils import rundir  # noqa: F401  (registers the ${run_id:} resolver)
from bindense.utils.instantiate import instantiate_callbacks, instantiate_loggers
from bindense.utils.run import ConfigError, apply_extras, check_config, check_monitors
from bindense.utils.wandb import decide_offline, finish_wandb, prepare_wandb

__all__ = [
    "ConfigError",
    "apply_extras",
    "check_config",
    "check_monitors",
    "decide_offline",
    "finish_wandb",
    "instantiate_callbacks",
    "instantiate_loggers",
    "prepare_wandb",
]
