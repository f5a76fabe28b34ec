"""Hydra multirun sweeps through the real command line: one W&B group per sweep, one finished run per
job, and scripts/summarize_sweep.py turning the sweep into a markdown table and a bar plot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import TINY

from bindense.utils.results import find_runs, load_run
from bindense.utils.wandb import read_offline_run

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def cli_overrides() -> list[str]:
    return [o for o in TINY if o != "logger=csv"]  # default loggers: csv + wandb (offline)


@pytest.mark.slow
def test_method_sweep_and_summary(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("train.py", "-m", "method=bnn,bidense", *cli_overrides(), f"hydra.sweep.dir={sweep}")
    runs = find_runs(sweep)
    assert [p.name for p in runs] == ["0", "1"]
    loaded = [load_run(p) for p in runs]
    assert [r["status"] for r in loaded] == ["completed", "completed"]
    assert [r["config"]["method"]["name"] for r in loaded] == ["bnn", "bidense"]

    wb = [read_offline_run(next((p / "wandb").glob("offline-run-*"))) for p in runs]
    assert wb[0]["group"] == wb[1]["group"] == "train_sweep"  # one group per sweep
    assert [w["name"] for w in wb] == ["0:method=bnn", "1:method=bidense"]
    assert all(w["finished"] and "val/seg/mIoU" in w["history_keys"] for w in wb)
    assert "method=bnn" in wb[0]["tags"] and "method=bidense" in wb[1]["tags"]

    proc = run_cli("scripts/summarize_sweep.py", str(sweep))
    table = (sweep / "summary.md").read_text()
    assert proc.stdout.startswith("| job | overrides |")
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert len(lines) == 3  # header + one row per job
    assert "method=bnn" in lines[1] and "method=bidense" in lines[2]
    assert "OPs (G)" in lines[0] and "val/seg/mIoU" in lines[0] and "params (K, paper rule)" in lines[0]
    assert (sweep / "summary.png").stat().st_size > 0


@pytest.mark.slow
def test_optuna_search_runs(tmp_path):
    sweep = tmp_path / "optuna"
    run_cli(
        "train.py",
        "hparams_search=synthetic_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    )
    assert len(find_runs(sweep)) == 2
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "best_value" in best
