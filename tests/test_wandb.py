"""W&B: the offline decision never needs a login or a network; a real short run leaves offline run files
with the logged metrics, panels, complexity table, tags and group, and is finished."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_train import tiny_train

from bindense.utils import wandb as wb


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setattr(wb, "server_problem", lambda timeout=3.0: pytest.fail("no network probe without a key"))


def test_offline_without_api_key(no_key):
    assert wb.api_key_configured() is False
    assert wb.decide_offline(None) is True
    assert wb.decide_offline(False) is True  # asking for online without a key would prompt: stays offline


def test_online_only_with_key_and_reachable_server(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wb, "server_problem", lambda timeout=3.0: "answered HTTP 401 Unauthorized")
    assert wb.decide_offline(None) is True
    monkeypatch.setattr(wb, "server_problem", lambda timeout=3.0: None)
    assert wb.decide_offline(None) is False
    assert wb.decide_offline(True) is True  # logger.wandb.offline=true always wins
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wb.decide_offline(None) is True


def test_netrc_login_counts_as_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    assert wb.api_key_configured() is True


def _cfg(**wandb_fields):
    return OmegaConf.create(
        {
            "task_name": "train",
            "tags": ["dev"],
            "ckpt_path": None,
            "method": {
                "name": "bidense",
                "layout": "bidense",
                "activation": "dab",
                "weight": "scaled_sign",
                "bypass": "cfb",
            },
            "data": {"name": "synthetic"},
            "model": {"decoder": "upernet", "backbone": "convnext", "width": "nano"},
            "logger": {
                "wandb": {
                    "save_dir": "",
                    "offline": None,
                    "group": None,
                    "name": None,
                    "tags": None,
                    "id": None,
                    **wandb_fields,
                }
            },
        }
    )


def test_prepare_fills_group_name_tags_for_a_sweep_job(no_key, monkeypatch, tmp_path):
    cfg = _cfg(save_dir=str(tmp_path / "wandb"))
    monkeypatch.setattr(
        wb, "_hydra_run_info", lambda: (True, "2025-01-01_00-00-00", "bidense_ade20k", "method=bnn", "3")
    )
    wb.prepare_wandb(cfg)
    w = cfg.logger.wandb
    assert w.offline is True and w.group == "bidense_ade20k_2025-01-01_00-00-00" and w.name == "3:method=bnn"
    assert {"dev", "method=bidense", "activation=dab", "bypass=cfb", "data=synthetic"} <= set(w.tags)
    assert Path(w.save_dir).is_dir()


def test_prepare_single_run_and_resume_id(no_key, monkeypatch, tmp_path):
    run = tmp_path / "run"
    (run / "wandb" / "offline-run-20250101_000000-abc123").mkdir(parents=True)
    cfg = _cfg(save_dir=str(run / "wandb"))
    cfg.ckpt_path = str(run / "checkpoints" / "last.ckpt")
    monkeypatch.setattr(wb, "_hydra_run_info", lambda: (False, None, None, None, "0"))
    wb.prepare_wandb(cfg)
    w = cfg.logger.wandb
    assert w.group == "train" and w.name == "bidense"
    assert w.id == "abc123" and w.resume == "allow"


def test_offline_run_files_hold_logged_metrics(no_key, tmp_path):
    import wandb

    tiny_train(tmp_path, "logger=default", "tags=[smoke]")
    assert wandb.run is None  # the job finished its run
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run = wb.read_offline_run(runs[0])
    assert run["finished"] and run["group"] == "train" and run["name"] == "bidense"
    assert {"smoke", "method=bidense", "activation=dab", "weight=scaled_sign", "bypass=cfb"} <= set(run["tags"])
    assert {"train/loss", "val/seg/mIoU", "val/seg/pixAcc", "val/seg/mIoU_best", "trainer/global_step"} <= run[
        "history_keys"
    ]
    assert any(k.startswith("val/panels") for k in run["history_keys"])  # prediction images
    assert any(k.startswith("complexity/") for k in run["history_keys"])  # complexity table
    assert "complexity/ops" in run["summary_keys"]
    assert {"method", "data", "model", "module", "trainer"} <= run["config_keys"]
    assert list((runs[0] / "files" / "media" / "images").rglob("*.png"))
