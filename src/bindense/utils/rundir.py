"""Run directories: a unique name for every run and sweep, and no writing into a finished run.

``hydra.run.dir`` / ``hydra.sweep.dir`` end in ``<date_time>_${run_id:}``: six random hex digits drawn once
per composed config (Hydra copies the resolver cache to every job of a sweep), so two runs started in the same
second get two directories. A directory that already holds a ``summary.json`` was written by a finished run;
:func:`refuse_finished_run` stops a new run from writing into it unless it resumes a checkpoint of that same
directory (docs/RELIABILITY.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf


def run_id() -> str:
    """Six random hex digits (16.7 M values): the suffix that keeps run directories apart."""
    return secrets.token_hex(3)


def register_resolvers() -> None:
    """``${run_id:}`` for the Hydra configs (cached: one value per composed config)."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)


def finished_run(path: str | Path) -> Path | None:
    """The ``summary.json`` that marks ``path`` (or a job directory of it) as a finished run, if any."""
    path = Path(path)
    if (path / "summary.json").is_file():
        return path / "summary.json"
    return next(iter(sorted(path.glob("*/summary.json"))), None) if path.is_dir() else None


def refuse_finished_run(out: str | Path, ckpt_path: str | None = None) -> None:
    """Raise unless ``out`` is fresh, or the run resumes one of ``out``'s own checkpoints."""
    from bindense.utils.run import ConfigError

    out = Path(out).resolve()
    marker = out / "summary.json"
    if not marker.is_file():
        return
    if ckpt_path and out in Path(str(ckpt_path)).expanduser().resolve().parents:
        return
    raise ConfigError(
        f"{out} already holds a finished run ({marker.name}); it is never written into. Pick another "
        f"hydra.run.dir (the default is unique per run), or resume that run: ckpt_path={out}/checkpoints/last.ckpt"
    )


def refuse_finished_cli_dir(argv: Sequence[str]) -> None:
    """Before Hydra writes ``.hydra/`` and the log: refuse a ``hydra.run.dir`` / ``hydra.sweep.dir`` override that
    names a finished run (unless ``ckpt_path`` resumes from it)."""
    keys = ("hydra.run.dir=", "hydra.sweep.dir=")
    ckpt = next((a.split("=", 1)[1] for a in argv if a.startswith("ckpt_path=")), None)
    for arg in argv:
        if arg.startswith(keys):
            target = Path(arg.split("=", 1)[1]).expanduser()
            marker = finished_run(target)
            if marker is not None:
                refuse_finished_run(marker.parent, ckpt)


register_resolvers()
