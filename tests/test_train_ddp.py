"""trainer=ddp_sim: Lightning DDP with 2 CPU processes over gloo, through the real command line."""

from __future__ import annotations

import json

import pytest
from test_sweep import run_cli
from test_train import TINY


@pytest.mark.slow
def test_ddp_sim_trains_with_two_processes(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train.py", "trainer=ddp_sim", *TINY, f"hydra.run.dir={run}")
    out = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in out and "GLOBAL_RANK: 1, MEMBER: 2/2" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert {"val/seg/mIoU", "val/seg/mIoU_best"} <= set(summary["metrics"])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "csv" / "metrics.csv").is_file() and list((run / "panels").glob("*.png"))
