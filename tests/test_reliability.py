"""Reliability of a run (docs/RELIABILITY.md): unique run directories, no writing into a finished run, W&B
failures fall back to offline (fake server on 127.0.0.1 only), Ctrl+C exits 130 with the resume command,
the running best survives a resume, config values are validated, the monitored metric follows the data."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from test_train import TINY, tiny_train

from bindense.lit.pipeline import evaluate, train
from bindense.utils import wandb as wb
from bindense.utils.compose import compose_config
from bindense.utils.results import load_run, resolve_run_dir, sweep_rows
from bindense.utils.run import ConfigError, check_config, cpu_fallback
from bindense.utils.rundir import refuse_finished_cli_dir, refuse_finished_run

ROOT = Path(__file__).resolve().parents[1]
ZERO_KEY = "0" * 40


# --------------------------------------------------------------------------------- 1. run directories
def test_every_composed_run_and_sweep_gets_its_own_directory(tmp_path):
    dirs = set()
    for _ in range(5):  # composed within the same second
        cfg = compose_config("train", [f"paths.log_dir={tmp_path}"])
        run, sweep = str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)
        assert run == str(cfg.hydra.run.dir)  # one value per config
        dirs |= {run, sweep}
    assert len(dirs) == 10


def test_finished_run_directory_is_never_written_into(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "summary.json").write_text('{"status": "completed"}')
    before = (run / "summary.json").read_text()
    cfg = compose_config("train", TINY, run)
    with pytest.raises(ConfigError, match="already holds a finished run"):
        train(cfg)
    assert (run / "summary.json").read_text() == before and not (run / "config.yaml").exists()
    refuse_finished_run(run, str(run / "checkpoints" / "last.ckpt"))  # resuming that run is allowed
    with pytest.raises(ConfigError, match="hydra.run.dir"):
        refuse_finished_cli_dir([f"hydra.run.dir={run}"])  # checked before Hydra writes .hydra/
    refuse_finished_cli_dir([f"hydra.run.dir={run}", f"ckpt_path={run}/checkpoints/last.ckpt"])


@pytest.mark.slow
def test_two_concurrent_runs_with_default_paths_keep_their_files(tmp_path):
    args = [o for o in TINY if o != "logger=csv"] + ["logger=csv", f"paths.log_dir={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    procs = [
        subprocess.Popen(
            [sys.executable, "train.py", *args, *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for extra in ([], ["method=bnn"])
    ]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
    runs = sorted((tmp_path / "train" / "runs").iterdir())
    assert len(runs) == 2
    methods = sorted(json.loads((r / "summary.json").read_text())["method"]["name"] for r in runs)
    assert methods == ["bidense", "bnn"]
    for r in runs:
        rows = (r / "csv" / "metrics.csv").read_text().splitlines()
        steps = [ln.split(",") for ln in rows[1:]]
        assert len(steps) == len({tuple(s) for s in steps})  # one run's rows only, none twice
        assert (r / "checkpoints" / "last.ckpt").is_file() and (r / ".hydra" / "config.yaml").is_file()


# --------------------------------------------------------------------------------- 2. W&B
class FakeWandb:
    """A W&B stand-in on 127.0.0.1 (loopback only) that answers every request with ``status``, or, with
    ``status=None``, accepts connections and never answers. It stops itself after ``lifetime`` seconds."""

    def __init__(self, status: int | None, lifetime: float = 120.0) -> None:
        self.status, self.deadline, self.requests = status, time.monotonic() + lifetime, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        held = []
        while not self.stop.is_set() and time.monotonic() < self.deadline:  # bounded loop
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.requests += 1
            if self.status is None:
                held.append(conn)  # accepted, never answered
                continue
            conn.settimeout(2.0)
            try:
                conn.recv(65536)
                body = b'{"errors": [{"message": "fake"}]}'
                head = f"HTTP/1.1 {self.status} Fake\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                conn.sendall(head.encode() + body)
            except OSError:
                pass
            finally:
                conn.close()
        for conn in held:
            conn.close()
        self.sock.close()

    def __enter__(self) -> FakeWandb:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def fake_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", ZERO_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize(
    "status, words", [(401, "answered HTTP 401"), (500, "answered HTTP 500"), (None, "did not answer")]
)
def test_wandb_server_failures_are_found_before_init(fake_env, monkeypatch, caplog, tmp_path, status, words):
    with FakeWandb(status) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        monkeypatch.setattr(wb, "PROBE_TIMEOUT", 1.0)
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=wb.__name__):
            assert wb.decide_offline(None, tmp_path) is True
        assert time.monotonic() - start < 10  # a hanging server is given up on, not waited for
        assert server.requests >= 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and words in warnings[0]
    assert f"wandb sync {tmp_path / 'wandb'}/offline-run-*" in warnings[0]


@pytest.mark.slow
@pytest.mark.parametrize("status", [401, 500, None])
def test_run_goes_on_offline_when_wandb_fails_at_start(fake_env, monkeypatch, caplog, tmp_path, status):
    with FakeWandb(status) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        with caplog.at_level(logging.WARNING):
            tiny_train(tmp_path, "logger=default")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and list((tmp_path / "wandb").glob("offline-run-*"))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "csv" / "metrics.csv").is_file()
    assert len([r for r in caplog.records if "wandb sync" in r.getMessage()]) == 1


def test_failed_wandb_init_falls_back_to_an_offline_logger(monkeypatch, tmp_path, caplog):
    from lightning.pytorch.loggers import WandbLogger

    class Refused(WandbLogger):
        @property
        def experiment(self):
            raise RuntimeError("CommError: 401 user is not logged in")

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_config("train", [*TINY, "logger=wandb"], tmp_path)
    with caplog.at_level(logging.WARNING, logger=wb.__name__):
        loggers = wb.start_wandb([Refused(save_dir=str(tmp_path), offline=True)], cfg)
    try:
        assert type(loggers[0]) is WandbLogger and cfg.logger.wandb.offline is True
        assert os.environ["WANDB_MODE"] == "offline"
        assert "CommError: 401" in caplog.text and "wandb sync" in caplog.text
    finally:
        wb.finish_wandb()


@pytest.mark.slow
def test_wandb_failure_at_the_end_keeps_the_run(monkeypatch, tmp_path):
    import wandb

    def broken(*args, **kwargs):
        raise ConnectionError("server went away")

    monkeypatch.setattr(wandb, "finish", broken)
    try:
        tiny_train(tmp_path, "logger=default")
    finally:
        monkeypatch.undo()
        wb.finish_wandb()
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "csv" / "metrics.csv").is_file()


# --------------------------------------------------------------------------------- 7. Ctrl+C, 8. resume best
class InterruptAfterFirstEpoch(Callback):
    """Acts like Ctrl+C once the first epoch (training, validation, checkpoint) is over."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def interrupted_run(tmp_path: Path, caplog, interrupt: Callback | None = None, epochs: int = 2) -> Path:
    handler = signal.getsignal(signal.SIGINT)
    try:
        cfg = compose_config("train", [*TINY, f"trainer.max_epochs={epochs}"], tmp_path)
        with pytest.raises(SystemExit) as exit_info, caplog.at_level(logging.WARNING):
            train(cfg, extra_callbacks=[interrupt or InterruptAfterFirstEpoch()])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after an interrupt
    assert exit_info.value.code == 130
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"ckpt_path={last}" in caplog.text
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"
    return last


def test_ctrl_c_exits_130_and_prints_the_resume_command(tmp_path, caplog):
    interrupted_run(tmp_path, caplog)


class SwallowedCtrlC(Callback):
    """Ctrl+C whose KeyboardInterrupt Python loses: it lands in a finalizer ("Exception ignored in ...")."""

    def on_train_batch_end(self, trainer, *args):
        if trainer.current_epoch == 1 and trainer.global_step % 2 == 1:  # mid-epoch of the second epoch
            try:
                os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode, in this block
                for _ in range(1000):
                    pass
            except KeyboardInterrupt:
                pass  # what Python does with an exception raised inside a weakref callback or __del__


def test_a_swallowed_ctrl_c_still_stops_the_run(tmp_path, caplog):
    interrupted_run(tmp_path, caplog, SwallowedCtrlC(), epochs=3)


@pytest.mark.slow
def test_ctrl_c_on_the_command_line(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_epochs=500", f"hydra.run.dir={run}"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline:  # bounded wait
            time.sleep(0.5)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # what Ctrl+C sends
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    assert f"ckpt_path={run}/checkpoints/last.ckpt" in out


@pytest.mark.slow
def test_resume_keeps_the_running_best(tmp_path, caplog):
    last = interrupted_run(tmp_path / "part", caplog)
    ckpt = torch.load(last, weights_only=False)
    ckpt["state_dict"]["best.seg__mIoU.max_value"] = torch.tensor(2.0)  # no validation reaches an mIoU of 2
    torch.save(ckpt, last)
    metrics, objects = tiny_train(tmp_path / "resumed", "trainer.max_epochs=2", f"ckpt_path={last}")
    assert objects["trainer"].current_epoch == 2
    assert metrics["val/seg/mIoU_best"] == pytest.approx(2.0) and metrics["val/seg/mIoU"] < 1.0
    trainer = objects["trainer"]
    assert float(trainer.checkpoint_callback.best_model_score) == pytest.approx(2.0)  # checkpointing follows it
    stopper = next(cb for cb in trainer.callbacks if type(cb).__name__ == "EarlyStopping")
    assert float(stopper.best_score) == pytest.approx(2.0)  # so does early stopping


# --------------------------------------------------------------------------------- 5. validation, 6. monitor
def test_bad_numbers_are_named_before_anything_is_built(tmp_path):
    bad = [
        "data.batch_size=abc",
        "data.num_workers=-1",
        "data.crop_size=[0,5]",
        "trainer.max_epochs=0",
        "module.optimizer.lr=-0.1",
        "+module.loss_weights.seg=-1",
        "model.width=huge",
    ]
    cfg = compose_config("train", [*TINY, *bad], tmp_path)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    msg = str(err.value)
    for expected in [
        "data.batch_size='abc': expected an integer >= 1",
        "data.num_workers=-1: expected an integer >= 0",
        "data.crop_size=[0, 5]: expected [height, width]",
        "trainer.max_epochs=0: expected an integer >= 1",
        "module.optimizer.lr=-0.1: expected a finite number > 0",
        "module.loss_weights.seg=-1: expected a finite number >= 0",
        "model.width='huge': expected one of 'tiny'",
    ]:
        assert expected in msg
    assert not (tmp_path / "checkpoints").exists()
    cfg = compose_config("train", [*TINY, "data.batch_size=-2"], tmp_path / "b")
    with pytest.raises(ConfigError, match="data.batch_size=-2: expected an integer >= 1"):
        train(cfg)


@pytest.mark.parametrize(
    "data, key, mode",
    [
        ("synthetic", "val/seg/mIoU_best", "max"),
        ("synthetic_depth", "val/depth/d1_best", "max"),
        ("nyu_depth", "val/depth/d1_best", "max"),
        ("synthetic_mt", "val/seg/mIoU_best", "max"),
    ],
)
def test_monitored_metric_follows_the_data(data, key, mode, tmp_path):
    cfg = compose_config("train", [f"data={data}"], tmp_path)
    check_config(cfg)
    assert (cfg.optimized_metric, cfg.optimized_mode) == (key, mode)
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.early_stopping.mode) == (key, mode)
    multitask = data == "synthetic_mt"  # five tasks: the data option selects the multi-task model and module
    per_task_decoders = cfg.model.get("shared_decoder", True) is False
    assert (per_task_decoders, "multitask" in cfg.module._target_) == (multitask, multitask)


@pytest.mark.slow
def test_synthetic_mt_trains_with_no_other_override(tmp_path):
    metrics, objects = tiny_train(tmp_path, "data=synthetic_mt")
    assert objects["trainer"].checkpoint_callback.monitor == "val/seg/mIoU_best"
    assert "val/seg/mIoU_best" in metrics and "val/normals/mean_angle" in metrics
    assert any(k.startswith("val/depth/") for k in metrics) and any(k.startswith("val/sal/") for k in metrics)


@pytest.mark.parametrize(
    ("key", "mode"),
    [("val/seg/loss", "min"), ("val/seg/mIoU_best", "max"), ("val/depth/rmse_pooled_best", "min"),
     ("val/depth/d1", "max"), ("val/mtl/delta_m_best", "max")],
)
def test_explicit_monitor_without_mode_gets_its_direction(tmp_path, key, mode):
    cfg = compose_config("train", ["data=synthetic_mt", f"optimized_metric={key}"], tmp_path)
    check_config(cfg)
    assert cfg.optimized_mode == mode


# --------------------------------------------------------------------------------- 7. smaller items
def test_test_split_of_a_dataset_without_one_is_refused(tmp_path):
    cfg = compose_config("eval", [*TINY[:8], "ckpt_path=/nonexistent.ckpt", "split=test"], tmp_path)
    with pytest.raises(ConfigError, match=r"has no test split \(its splits: train='train', val='val'\)"):
        evaluate(cfg)
    cfg = compose_config("train", [*TINY, "test=true"], tmp_path / "t")
    with pytest.raises(ConfigError, match="data.test_split"):
        train(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without a GPU")
def test_gpu_experiment_falls_back_to_cpu(tmp_path, caplog):
    cfg = compose_config("train", ["experiment=bidense_nyu", "trainer=ddp"], tmp_path)
    with caplog.at_level(logging.WARNING):
        cpu_fallback(cfg)
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy) == ("cpu", 1, "auto")
    assert "no GPU on this machine" in caplog.text and "trainer=cpu" in caplog.text
    metrics, objects = tiny_train(tmp_path / "run", "trainer=gpu")  # failed with "No supported gpu backend found"
    assert objects["trainer"].num_devices == 1 and "val/seg/mIoU" in metrics


def test_failed_sweep_job_shows_failed_and_its_error(tmp_path):
    ok, bad = tmp_path / "0", tmp_path / "1"
    ok.mkdir()
    (ok / "summary.json").write_text(json.dumps({"status": "completed", "metrics": {}}))
    (bad / ".hydra").mkdir(parents=True)
    (bad / ".hydra" / "config.yaml").write_text("optimized_metric: val/seg/mIoU_best\n")
    (bad / "train.log").write_text(
        "[2026-01-01 00:00:00,000][train][INFO] - start\n"
        "[2026-01-01 00:00:01,000][train][ERROR] - training failed: DatasetLayoutError: ADE20K: root missing.\n"
        "Expected layout: ...\n"
    )
    _, rows = sweep_rows([load_run(ok), load_run(bad)])
    assert rows[0][2] == "completed"
    assert rows[1][2] == "failed: training failed: DatasetLayoutError: ADE20K: root missing."


def test_corrupt_header_length_is_reported_as_such(tmp_path):
    import struct

    from bindense.export.container import PackedFormatError, read_container, write_container

    path = tmp_path / "m.bdn"
    write_container(path, {"name": "x"}, {"w": torch.arange(6, dtype=torch.float32)})
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack("<Q", 4294967296 + struct.unpack("<Q", bytes(data[16:24]))[0])
    path.write_bytes(bytes(data))
    with pytest.raises(PackedFormatError, match="corrupt header") as err:
        read_container(path)
    assert "truncated" not in str(err.value)


def test_gitignore_ignores_no_tracked_file():
    tracked_but_ignored = subprocess.run(
        ["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked_but_ignored == []
    for name in ("conf/train.yaml", "conf/eval.yaml"):
        assert subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT).returncode == 1


# --------------------------------------------------------------------------------- 4. notebook run dir
def test_notebook_run_dir_is_resolved_from_the_project_root(tmp_path):
    logs = tmp_path / "logs" / "train"
    good, newer_failed = logs / "runs" / "2026-01-01_00-00-00_aaaaaa", logs / "multiruns" / "2026-01-02_00-00-00_b"
    good.mkdir(parents=True)
    (good / "summary.json").write_text('{"status": "completed"}')
    (newer_failed / "0").mkdir(parents=True)
    (newer_failed / "0" / "summary.json").write_text('{"status": "failed: ValueError: x"}')
    (newer_failed / "1").mkdir()  # a job that wrote nothing
    assert resolve_run_dir(None, tmp_path) == good.resolve()  # the failed, newer sweep does not shadow it
    assert resolve_run_dir("logs/train/runs/2026-01-01_00-00-00_aaaaaa", tmp_path) == good.resolve()
    with pytest.raises(FileNotFoundError, match="BINDENSE_RUN_DIR"):
        resolve_run_dir("logs/nowhere", tmp_path)
