"""W&B set-up that never prompts or hangs: offline unless a key is configured and the server answers.

``prepare_wandb(cfg)`` fills the null fields of ``cfg.logger.wandb`` (offline, group, name, tags, id)
before the logger is instantiated; ``finish_wandb()`` closes the run at the end of every job.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.wandb.ai"


def _host() -> str:
    return os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)


def api_key_configured() -> bool:
    """True when ``WANDB_API_KEY`` is set or ``~/.netrc`` holds a key for the W&B host (``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(urlparse(_host()).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def server_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the W&B host opens within ``timeout`` seconds."""
    url = urlparse(_host())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def decide_offline(requested: bool | None) -> bool:
    """Offline unless online is possible: ``requested`` True forces offline; None / False go online only
    with a configured API key and a reachable server (otherwise W&B would prompt for a login or hang)."""
    if requested:
        return True
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled"):
        return True
    if not api_key_configured():
        if requested is False:
            log.warning("logger.wandb.offline=false but no W&B API key is configured: logging offline")
        return True
    if not server_reachable():
        log.warning("W&B server %s unreachable: logging offline (sync later with `wandb sync`)", _host())
        return True
    return False


def previous_run_id(ckpt_path: str | Path | None) -> str | None:
    """W&B id of the run that wrote ``<run>/checkpoints/<file>.ckpt`` (latest run under ``<run>/wandb``)."""
    if not ckpt_path:
        return None
    wandb_dir = Path(ckpt_path).resolve().parent.parent / "wandb"
    runs = sorted(p for p in wandb_dir.glob("*run-*-*") if p.is_dir())
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def method_tags(cfg: DictConfig) -> list[str]:
    """``tags`` of the config plus method parts, data and model: what a W&B dashboard filters on."""
    tags = [str(t) for t in (cfg.get("tags") or [])]
    method = cfg.get("method") or {}
    for key in ("name", "layout", "activation", "weight", "bypass"):
        if method.get(key) is not None:
            tags.append(f"{'method' if key == 'name' else key}={method[key]}")
    if cfg.get("data") is not None and cfg.data.get("name"):
        tags.append(f"data={cfg.data.name}")
    if cfg.get("model") is not None:
        model = "+".join(str(cfg.model[k]) for k in ("decoder", "backbone", "width") if cfg.model.get(k))
        if model:
            tags.append(f"model={model}")
    return list(dict.fromkeys(t[:64] for t in tags))  # W&B tags are at most 64 characters


def _swept_keys(hc) -> set[str]:
    """Keys a multirun varies: sweep overrides of the command line (``a=1,2``) and sweeper params."""
    keys = {str(k) for k in (hc.sweeper.get("params") or {})}
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        args = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
        keys |= {o.key_or_group for o in OverridesParser.create().parse_overrides(args) if o.is_sweep_override()}
    except Exception:  # an unusual command line: fall back to all overrides
        pass
    return keys


def _hydra_run_info() -> tuple[bool, str | None, str | None, str | None, str]:
    """(multirun?, sweep dir name, experiment choice, swept overrides of this job, job number)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return False, None, None, None, "0"
    if hc.mode != RunMode.MULTIRUN:
        return False, None, hc.runtime.choices.get("experiment"), None, "0"
    keys = _swept_keys(hc)
    swept = [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+~") in keys]
    overrides = ",".join(swept) if swept else hc.job.get("override_dirname")
    num = str(hc.job.get("num", 0))
    return True, Path(str(hc.sweep.dir)).name, hc.runtime.choices.get("experiment"), overrides, num


def prepare_wandb(cfg: DictConfig) -> None:
    """Fill ``cfg.logger.wandb``'s null fields and the environment so W&B is silent and non-interactive."""
    wcfg = (cfg.get("logger") or {}).get("wandb")
    if wcfg is None:
        return
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    offline = decide_offline(wcfg.get("offline"))
    if offline and os.environ.get("WANDB_MODE", "").lower() != "disabled":
        os.environ["WANDB_MODE"] = "offline"
    multirun, sweep, experiment, overrides, job_num = _hydra_run_info()
    base = experiment or str(cfg.get("task_name", "train"))
    method = str((cfg.get("method") or {}).get("name", "run"))
    with open_dict(wcfg):
        wcfg.offline = offline
        if wcfg.get("group") is None:
            wcfg.group = f"{base}_{sweep}" if multirun else base
        if wcfg.get("name") is None:
            wcfg.name = f"{job_num}:{overrides or method}"[:128] if multirun else method
        if wcfg.get("tags") is None:
            wcfg.tags = method_tags(cfg)
        if wcfg.get("id") is None and cfg.get("ckpt_path"):
            run_id = previous_run_id(cfg.ckpt_path)
            if run_id:
                wcfg.id = run_id
                wcfg.resume = "allow"
        Path(str(wcfg.save_dir)).mkdir(parents=True, exist_ok=True)
    allow_offline_log_model(wcfg)


def allow_offline_log_model(wcfg: DictConfig) -> None:
    """Checkpoints as artifacts offline too: Lightning's WandbLogger refuses ``log_model`` with ``offline=True``,
    so an offline run that asks for them goes offline through ``WANDB_MODE=offline`` and ``offline=False``.
    ``log_model`` stays exactly what the user set (false by default: no checkpoint is ever logged)."""
    if not wcfg.get("log_model") or not wcfg.get("offline"):
        return
    if os.environ.get("WANDB_MODE", "").lower() == "disabled":
        with open_dict(wcfg):
            wcfg.log_model = False  # a disabled run logs nothing
        return
    os.environ["WANDB_MODE"] = "offline"
    with open_dict(wcfg):
        wcfg.offline = False


def finish_wandb(exit_code: int = 0) -> None:
    """Close the active W&B run, if any (each Hydra job of a sweep gets its own run).

    ``wandb.finish`` can return before the service has written the whole run file; ``wandb.teardown``
    waits for it, so the job's run files are complete when the job ends.
    """
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)
        wandb.teardown()


def _log_records(path: Path):
    """Raw records of a W&B transaction log (``run-<id>.wandb``: 32 KiB blocks of chunked records)."""
    import struct

    data = Path(path).read_bytes()
    block, pos, pending = 32768, 7, b""  # 7-byte file header, then 7-byte chunk headers
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk
            pending = b""


def read_offline_run(run_dir: str | Path) -> dict:
    """What an offline run holds: ``{"id", "group", "name", "tags", "history_keys", "summary_keys",
    "config_keys", "finished"}`` from ``<run_dir>/run-<id>.wandb`` (no W&B server involved)."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    out: dict = {"history_keys": set(), "summary_keys": set(), "config_keys": set(), "finished": False}
    for raw in _log_records(files[-1]):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(id=rec.run.run_id, group=rec.run.run_group, name=rec.run.display_name, tags=list(rec.run.tags))
        elif kind == "history":
            out["history_keys"] |= {i.key or "/".join(i.nested_key) for i in rec.history.item}
        elif kind == "summary":
            out["summary_keys"] |= {i.key or "/".join(i.nested_key) for i in rec.summary.update}
        elif kind == "config":
            out["config_keys"] |= {i.key or "/".join(i.nested_key) for i in rec.config.update}
        elif kind == "exit":
            out["finished"] = True
    return out
