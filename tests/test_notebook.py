"""notebooks/results.ipynb runs end to end on a tiny real run and on a tiny real sweep."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_sweep import run_cli
from test_train import TINY

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "results.ipynb"


def execute(run_dir: Path, monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("BINDENSE_RUN_DIR", str(run_dir))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(NOTEBOOK.parent)}}
    NotebookClient(nb, timeout=300, kernel_name="python3", resources=resources).execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> tuple[str, list[str]]:
    text, kinds = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            kinds.append(out.output_type)
            text.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
            kinds += list(out.get("data", {}))
    return "\n".join(text), kinds


@pytest.mark.slow
def test_results_notebook_on_a_sweep(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    run_cli("train.py", "-m", "method=bnn,bidense", *TINY, "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}")
    nb = execute(sweep, monkeypatch)
    text, kinds = outputs(nb)
    assert "2 run(s)" in text
    assert "method=bnn" in text and "method=bidense" in text and "val/seg/mIoU" in text  # the table
    assert "OPs = FLOPs + BOPs/64" in text  # complexity
    assert kinds.count("image/png") >= 4  # 2 curve figures + 2 panels
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    # one run directory of the sweep on its own
    text, kinds = outputs(execute(sweep / "0", monkeypatch))
    assert "1 run(s)" in text and kinds.count("image/png") >= 2
