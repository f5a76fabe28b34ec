"""Seed grouping of sweep summaries: jobs that differ only in ``seed`` -> mean ± std (n), on fabricated run dirs."""

from __future__ import annotations

import json
import math
import runpy
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from bindense.utils.results import find_runs, group_by_seed, group_stats, load_run, mean_std, seed_rows

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "summarize_sweep.py"
BEST = "val/seg/mIoU_best"


def fake_run(root: Path, job: int, overrides: list[str], miou: float, status: str = "completed") -> None:
    run = root / str(job)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    metrics = {"val/seg/mIoU": miou - 0.01, "val/seg/pixAcc": 0.5 + miou, BEST: miou, "bnn/flip_ratio": 0.1}
    summary = {"status": status, "metrics": metrics if status == "completed" else {}, "optimized_metric": BEST}
    summary["best_score"] = miou if status == "completed" else None
    (run / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def sweep(tmp_path):
    values = {"bnn": [0.10, 0.14, 0.12], "bidense": [0.30, 0.34, 0.35]}
    job = 0
    for seed in (1, 2, 3):  # Hydra's job order: the last swept key varies fastest
        for method in ("bnn", "bidense"):
            fake_run(
                tmp_path, job, [f"method={method}", f"seed={seed}", "trainer.max_epochs=8"], values[method][seed - 1]
            )
            job += 1
    fake_run(tmp_path, job, ["method=bidense", "seed=4", "trainer.max_epochs=8"], 0.0, status="failed: RuntimeError")
    return tmp_path, values


def test_groups_differ_only_in_seed(sweep):
    root, values = sweep
    groups = group_by_seed([load_run(p) for p in find_runs(root)])
    assert [g["label"] for g in groups] == ["method=bnn", "method=bidense"]
    assert groups[0]["seeds"] == ["1", "2", "3"] and groups[1]["seeds"] == ["1", "2", "3", "4"]
    for g, method in zip(groups, ("bnn", "bidense")):
        mean, std, n = group_stats(g, [BEST])[BEST]
        assert n == 3  # the failed seed is left out
        assert mean == pytest.approx(statistics.mean(values[method]))
        assert std == pytest.approx(statistics.stdev(values[method]))


def test_other_differences_are_not_merged(tmp_path):
    fake_run(tmp_path, 0, ["method=bnn", "seed=1", "lr=1"], 0.1)
    fake_run(tmp_path, 1, ["method=bnn", "seed=2", "lr=2"], 0.2)
    groups = group_by_seed([load_run(p) for p in find_runs(tmp_path)])
    assert [len(g["runs"]) for g in groups] == [1, 1] and [g["label"] for g in groups] == ["lr=1", "lr=2"]


def test_a_value_spelled_two_ways_is_one_group(tmp_path):
    """A multirun stores ``model.vib.enabled=False`` where a single run stores ``...=false``: the same value."""
    fake_run(tmp_path, 0, ["model.vib.enabled=False", "seed=1"], 0.1)
    fake_run(tmp_path, 1, ["model.vib.enabled=false", "seed=2"], 0.2)
    fake_run(tmp_path, 2, ["model.vib.enabled=true", "seed=1"], 0.3)
    groups = group_by_seed([load_run(p) for p in find_runs(tmp_path)])
    assert [g["label"] for g in groups] == ["model.vib.enabled=false", "model.vib.enabled=true"]
    assert groups[0]["seeds"] == ["1", "2"]


def test_mean_std_edge_cases():
    assert mean_std([2.0]) == (2.0, pytest.approx(math.nan, nan_ok=True), 1)
    assert mean_std([None, float("nan")])[2] == 0
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)


def test_script_writes_grouped_table_and_error_bar_plot(sweep, capsys, monkeypatch):
    root, values = sweep
    monkeypatch.setattr(sys, "argv", ["summarize_sweep.py", str(root)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exit_info.value.code == 0
    text = (root / "summary_seeds.md").read_text()
    bnn = statistics.mean(values["bnn"]), statistics.stdev(values["bnn"])
    assert f"| method=bnn | 1,2,3 | 0 | 0 | {bnn[0]:.4f} ± {bnn[1]:.4f} (n=3)" in text
    assert "| method=bidense | 1,2,3 | 1 | 0 |" in text  # one failed job counted, not averaged
    assert "| method=bnn | val/seg/pixAcc |" in text  # every val/ metric in the long table
    assert "bnn/flip_ratio" not in text
    assert (root / "summary_seeds.png").stat().st_size > 5_000
    assert "summary_seeds.md" in capsys.readouterr().out


def test_a_running_job_is_unfinished_not_failed(sweep):
    """A job of a sweep still running (no summary.json yet) is counted apart from the failed ones."""
    root, _ = sweep
    fake_run(root, 99, ["method=bnn", "seed=5", "trainer.max_epochs=8"], 0.0, status="unknown (no summary.json)")
    groups = group_by_seed([load_run(p) for p in find_runs(root)])
    header, rows = seed_rows(groups, [BEST])
    assert header[2:4] == ["failed", "unfinished"]
    by_label = {r[0]: r for r in rows}
    assert by_label["method=bnn"][2:4] == ["0", "1"] and by_label["method=bidense"][2:4] == ["1", "0"]
