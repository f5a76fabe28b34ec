"""W&B set-up that never prompts, hangs or crashes a run: offline unless a key is configured and the server
accepts it (docs/RELIABILITY.md).

``prepare_wandb(cfg)`` fills the null fields of ``cfg.logger.wandb`` (offline, group, name, tags, id)
before the logger is instantiated; ``start_wandb`` starts the run and falls back to offline when that fails;
``finish_wandb()`` closes the run at the end of every job and never raises.
"""

from __future__ import annotations

import base64
import json
import logging
import netrc
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.wandb.ai"


def _host() -> str:
    return os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)


def api_key() -> str | None:
    """``WANDB_API_KEY``, else the key ``wandb login`` stored in ``~/.netrc`` for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        auth = netrc.netrc().authenticators(urlparse(_host()).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return None
    return auth[2] if auth else None


def api_key_configured() -> bool:
    """True when ``WANDB_API_KEY`` is set or ``~/.netrc`` holds a key for the W&B host (``wandb login``)."""
    return api_key() is not None


#: seconds the start-up probe of the W&B server may take (connect, then each read)
PROBE_TIMEOUT = 5.0


def server_problem(timeout: float | None = None) -> str | None:
    """Why an online run would fail now, or None: asks the server who the API key belongs to (one GraphQL
    ``viewer`` query), so a rejected key (401), a failing server (5xx), no network and a server that accepts
    the connection but never answers are all found before ``wandb.init``, within ``timeout`` seconds."""
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    key = api_key() or ""
    request = urllib.request.Request(
        _host().rstrip("/") + "/graphql",
        data=json.dumps({"query": "query { viewer { id } }"}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"api:{key}".encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        return f"answered HTTP {err.code} {err.reason}" + (" (API key rejected)" if err.code in (401, 403) else "")
    except (urllib.error.URLError, OSError) as err:  # refused, DNS, timeout (socket.timeout is an OSError)
        reason = getattr(err, "reason", err)
        return f"did not answer ({type(reason).__name__}: {reason or 'timed out'})"
    return None if 200 <= status < 300 else f"answered HTTP {status}"


def server_reachable(timeout: float | None = None) -> bool:
    """True when the W&B server accepts the configured API key within ``timeout`` seconds."""
    return server_problem(timeout) is None


def offline_warning(problem: str, save_dir: str | Path | None = None) -> str:
    """The one warning of a fallback to offline: why, and how to upload the run later."""
    where = Path(save_dir) / "wandb" if save_dir else Path("<run dir>") / "wandb"
    msg = (
        f"W&B server {_host()} {problem}: logging offline instead; the run is complete on disk. "
        f"Upload it later with `wandb sync {where}/offline-run-*`"
    )
    log.warning(msg)
    return msg


def decide_offline(requested: bool | None, save_dir: str | Path | None = None) -> bool:
    """Offline unless online is possible: ``requested`` True forces offline; None / False go online only
    with a configured API key that the server accepts (otherwise W&B would prompt, hang or crash)."""
    if requested:
        return True
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled"):
        return True
    if not api_key_configured():
        if requested is False:
            log.warning("logger.wandb.offline=false but no W&B API key is configured: logging offline")
        return True
    problem = server_problem()
    if problem is not None:
        offline_warning(problem, save_dir)
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
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")  # bounds wandb.init should the server stall after the probe
    offline = decide_offline(wcfg.get("offline"), wcfg.get("save_dir"))
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


def start_wandb(loggers: list[Any], cfg: DictConfig) -> list[Any]:
    """Start every online W&B run now; when ``wandb.init`` fails (auth, quota, server, timeout), warn once
    and replace that logger by an offline one, so the run goes on and can be synced later."""
    from lightning.pytorch.loggers import WandbLogger

    out = []
    for logger in loggers:
        if isinstance(logger, WandbLogger) and os.environ.get("WANDB_MODE", "").lower() != "offline":
            try:
                logger.experiment  # noqa: B018 - starts the run (wandb.init)
            except Exception as err:  # noqa: BLE001 - any failure at start means: go offline
                first = (str(err).splitlines() or [""])[0][:300]
                wcfg = cfg.logger.wandb
                offline_warning(f"failed at wandb.init ({type(err).__name__}: {first})", wcfg.get("save_dir"))
                finish_wandb(1)
                os.environ["WANDB_MODE"] = "offline"
                with open_dict(wcfg):
                    wcfg.offline = True
                import hydra

                logger = hydra.utils.instantiate(wcfg)
        out.append(logger)
    return out


def finish_wandb(exit_code: int = 0) -> None:
    """Close the active W&B run, if any (each Hydra job of a sweep gets its own run); never raises.

    ``wandb.finish`` can return before the service has written the whole run file; ``wandb.teardown``
    waits for it, so the job's run files are complete when the job ends. A W&B failure here (server gone,
    upload refused) is logged: checkpoints, CSV and summary are written before and stay.
    """
    try:
        import wandb
    except ImportError:
        return
    try:
        if wandb.run is not None:
            wandb.finish(exit_code=exit_code)
            wandb.teardown()
    except Exception as err:  # noqa: BLE001
        log.warning(
            "W&B failed while closing the run (%s: %s); the run's files on disk are complete. "
            "Upload the offline copy with `wandb sync <run dir>/wandb/<run>`",
            type(err).__name__,
            err,
        )


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
