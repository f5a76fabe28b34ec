"""W&B dashboards and BNN diagnostics, read back from the offline run file (``run-<id>.wandb`` records):
images with masks and class labels, per-class IoU and complexity tables, metric definitions with their summary,
model artifacts with aliases, per-epoch loss terms, flip ratio / entropy / histograms."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_train import tiny_train
from torch import nn

from bindense.binary import BinaryConv2d
from bindense.lit.diagnostics import BNNDiagnostics, binary_weight_units, flip_ratios, weight_signs
from bindense.utils import wandb as wb


def read_records(run_dir: Path) -> dict:
    """History rows, summary, config, metric definitions and artifacts of an offline run."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict = {"history": [], "summary": {}, "config": {}, "metrics": {}, "artifacts": []}
    for raw in wb._log_records(next(run_dir.glob("run-*.wandb"))):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row: dict = defaultdict(dict)
            for item in rec.history.item:  # media and tables come as nested keys [key, field]
                value = json.loads(item.value_json)
                if item.key or len(item.nested_key) == 1:
                    row[item.key or item.nested_key[0]] = value
                else:
                    row[item.nested_key[0]]["/".join(item.nested_key[1:])] = value
            out["history"].append(dict(row))
        elif kind == "summary":
            out["summary"].update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update}
            )
        elif kind == "config":
            out["config"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "metric":
            out["metrics"][rec.metric.name or rec.metric.glob_name] = rec.metric
        elif kind == "artifact":
            out["artifacts"].append((rec.artifact.type, rec.artifact.name, list(rec.artifact.aliases)))
    return out


def values(records: dict, key: str) -> list:
    return [row[key] for row in records["history"] if key in row]


@pytest.fixture(scope="module")
def dashboard_run(tmp_path_factory):
    import os

    saved = {k: os.environ.get(k) for k in ("WANDB_API_KEY", "WANDB_MODE")}
    os.environ.pop("WANDB_API_KEY", None)
    out = tmp_path_factory.mktemp("dashboard")
    try:
        tiny_train(
            out, "logger=default", "logger.wandb.log_model=true", "logger.wandb.offline=true", "trainer.max_epochs=2"
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    run = next((out / "wandb").glob("offline-run-*"))
    return out, run, read_records(run)


def test_best_metric_definition_and_summary(dashboard_run):
    _, _, rec = dashboard_run
    assert "trainer/global_step" in rec["metrics"]
    best = rec["metrics"]["val/seg/mIoU_best"]
    assert best.summary.max and not best.summary.min and best.step_metric == "trainer/global_step"
    logged = values(rec, "val/seg/mIoU_best")
    assert len(logged) == 2 and rec["summary"]["val/seg/mIoU_best"] == {"max": pytest.approx(max(logged))}


def test_segmentation_images_with_masks_and_class_names(dashboard_run):
    _, run, rec = dashboard_run
    images = values(rec, "val/predictions/seg")
    assert len(images) == 2  # one panel set per epoch
    for entry in images:
        assert entry["_type"] == "images/separated" and entry["count"] == 4
        assert all(set(m) == {"predictions", "ground_truth"} for m in entry["all_masks"])
        assert all((run / "files" / m["predictions"]["path"]).is_file() for m in entry["all_masks"])
    labels = rec["config"]["_wandb"]["mask/class_labels"]
    named = next(v["value"] for k, v in labels.items() if k.startswith("val/predictions/seg"))
    assert named["1"] == "wall" and named["255"] == "ignore" and len(named) == 14


def test_per_class_iou_table_matches_the_logged_miou(dashboard_run):
    _, run, rec = dashboard_run
    tables = values(rec, "val/seg/per_class_iou")
    miou = values(rec, "val/seg/mIoU")
    assert len(tables) == len(miou) == 2
    for table, expected in zip(tables, miou):
        assert table["_type"] == "table-file" and table["nrows"] == 13
        data = json.loads((run / "files" / table["path"]).read_text())
        assert data["columns"] == ["id", "class", "IoU"] and data["data"][1][1] == "wall"
        ious = [r[2] for r in data["data"] if r[2] is not None]
        assert sum(ious) / len(ious) == pytest.approx(expected, abs=1e-5)  # read before the metric reset


def test_complexity_layer_table(dashboard_run):
    _, run, rec = dashboard_run
    (layers,) = values(rec, "complexity/layers")
    data = json.loads((run / "files" / layers["path"]).read_text())
    assert data["columns"][:3] == ["layer", "kind", "a/w bits"]
    assert any(row[2] == "1/1" and row[4] > 0 for row in data["data"])  # binary convs with 1-bit params


def test_model_artifacts_with_best_and_latest_aliases_offline(dashboard_run):
    out, _, rec = dashboard_run
    models = [a for a in rec["artifacts"] if a[0] == "model"]
    assert models and all(a[1].startswith("model-") for a in models)
    assert any("best" in a[2] for a in models) and all("latest" in a[2] for a in models)


def test_loss_terms_per_step_and_per_epoch(dashboard_run):
    _, _, rec = dashboard_run
    assert len(values(rec, "train/loss")) >= 4  # per step (2 steps x 2 epochs)
    assert len(values(rec, "train/loss_epoch")) == 2 and len(values(rec, "train/seg/loss_epoch")) == 2


def test_bnn_diagnostics_in_the_run(dashboard_run):
    _, _, rec = dashboard_run
    flips = values(rec, "bnn/flip_ratio")
    assert len(flips) == 2 and all(0 < f <= 1 for f in flips)  # lr 1e-3 on 1e-3-scaled weights flips signs
    assert any(k.startswith("bnn/flip_ratio/backbone.stages.") for row in rec["history"] for k in row)
    entropy = values(rec, "bnn/entropy")
    assert len(entropy) == 2 and all(0 <= e <= 1 for e in entropy)
    for key in ("bnn/latent/backbone.stages.0", "bnn/threshold/dab", "bnn/scale/dab"):
        hists = values(rec, key)
        assert hists and hists[0]["_type"] == "histogram" and sum(hists[0]["values"]) > 0


def test_no_model_artifact_unless_asked(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = OmegaConf.create({"offline": True, "log_model": False})
    wb.allow_offline_log_model(cfg)
    assert cfg.offline is True and cfg.log_model is False
    cfg = OmegaConf.create({"offline": True, "log_model": True})
    wb.allow_offline_log_model(cfg)  # Lightning refuses log_model with offline=True: offline via the env
    assert cfg.offline is False and cfg.log_model is True
    import os

    assert os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = OmegaConf.create({"offline": True, "log_model": "all"})
    wb.allow_offline_log_model(cfg)
    assert cfg.log_model is False


# ----------------------------------------------------------------------------- diagnostics units
class TwoStages(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(BinaryConv2d(4, 4, 3, padding=1, activation="sign", weight="sign", bypass="none"))
        self.b = nn.Sequential(BinaryConv2d(4, 4, 3, padding=1, activation="sign", weight="sign", bypass="none"))

    def forward(self, x):
        return self.b(self.a(x))


def test_flip_ratio_counts_sign_changes_per_stage():
    net = TwoStages()
    units = binary_weight_units(net)
    assert set(units) == {"a.0", "b.0"}
    before = weight_signs(units)
    with torch.no_grad():
        w = net.a[0].weight.view(-1)
        w[: w.numel() // 4] = -w[: w.numel() // 4]  # flip a quarter of stage a (no exact zeros at init)
    ratios = flip_ratios(before, weight_signs(units), depth=1)
    assert ratios["a"] == pytest.approx(0.25) and ratios["b"] == 0.0 and ratios[""] == pytest.approx(0.125)


def test_diagnostics_switches_and_no_hooks_left():
    cb = BNNDiagnostics(flip_ratio=False, entropy=False, histograms=False)
    assert not (cb.flip_ratio or cb.entropy or cb.histograms)
    net = TwoStages()
    cb._remove_hooks(keep_recorder=False)
    assert all(not m._forward_hooks for m in net.modules())
