"""Read finished runs and sweeps back: run summaries, metric histories, sweep tables and plots.

Used by ``scripts/summarize_sweep.py`` and ``notebooks/results.ipynb``. A *run directory* is what one
``train.py`` job writes (``summary.json``, ``.hydra/``, ``csv/metrics.csv``, ``complexity.json``,
``panels/``); a *sweep directory* holds one run directory per job (``0/``, ``1/``, ...).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bindense.metrics import main_metric
from bindense.tasks import task_names

#: columns shown per task in a sweep table (final validation values), besides the task's main metric
TASK_COLUMNS = {"seg": ["mIoU", "pixAcc"], "depth": ["d1", "abs_rel", "rmse", "rmse_pooled"]}


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "summary.json").is_file() or (path / ".hydra" / "config.yaml").is_file()


def find_runs(path: str | Path) -> list[Path]:
    """``[path]`` for a run directory, else its run subdirectories in job order (0, 1, ..., 10)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    if is_run_dir(path):
        return [path]
    runs = [p for p in path.iterdir() if p.is_dir() and is_run_dir(p)]
    runs.sort(key=lambda p: (0, int(p.name)) if p.name.isdigit() else (1, p.name))
    if not runs:
        raise FileNotFoundError(f"{path} holds no run directory (no summary.json or .hydra/ found)")
    return runs


#: the repository (an editable install is assumed, as for the configs)
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _completed(summary: Path) -> bool:
    try:
        return json.loads(summary.read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def resolve_run_dir(value: str | Path | None = None, root: str | Path | None = None) -> Path:
    """The run or sweep directory to show: ``value`` (``BINDENSE_RUN_DIR``; a relative path is taken from the
    project root, not from the current directory), else the newest run or sweep under ``<root>/logs`` with a
    completed ``summary.json`` (a failed or running job never shadows the good runs)."""
    root = Path(root) if root is not None else PROJECT_ROOT
    if value:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_dir():
            raise FileNotFoundError(f"BINDENSE_RUN_DIR={value!r}: {path} is not a directory")
        return path.resolve()
    newest: dict[Path, float] = {}
    for summary in (root / "logs").glob("*/*/*/summary.json"):  # <task>/runs/<run>
        if _completed(summary):
            newest[summary.parent] = summary.stat().st_mtime
    for summary in (root / "logs").glob("*/multiruns/*/*/summary.json"):  # <task>/multiruns/<sweep>/<job>
        if _completed(summary):
            sweep = summary.parent.parent
            newest[sweep] = max(newest.get(sweep, 0.0), summary.stat().st_mtime)
    if not newest:
        raise FileNotFoundError(
            f"no completed run under {root / 'logs'}: train one with `python train.py` or set BINDENSE_RUN_DIR"
        )
    return max(newest, key=newest.__getitem__).resolve()


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def failure_from_log(run_dir: str | Path) -> str | None:
    """``failed: <first line of the error>`` from the job's log (``<task_name>.log``), for a job that wrote no
    ``summary.json``; None when the log shows no error."""
    for log_file in sorted(Path(run_dir).glob("*.log")):
        errors = [ln for ln in log_file.read_text(errors="replace").splitlines() if "][ERROR] - " in ln]
        if errors:
            return "failed: " + errors[-1].split("][ERROR] - ", 1)[1].strip()
    return None


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Everything known about one run: summary (status, metrics, files), overrides, config, complexity."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    complexity = summary.get("complexity")
    if complexity is None and (run_dir / "complexity.json").is_file():
        complexity = json.loads((run_dir / "complexity.json").read_text())
    config = _read_yaml(run_dir / "config.yaml") or _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
    overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml") or summary.get("overrides") or []
    overrides = [canonical_override(o) for o in overrides]
    return {
        "dir": run_dir,
        "name": run_dir.name,
        "status": summary.get("status") or failure_from_log(run_dir) or "unknown (no summary.json)",
        "metrics": summary.get("metrics", {}),
        "best_score": summary.get("best_score"),
        "optimized_metric": summary.get("optimized_metric") or config.get("optimized_metric"),
        "overrides": list(overrides),
        "config": config,
        "complexity": complexity or {},
        "files": summary.get("files", {}),
    }


def load_history(run_dir: str | Path) -> list[dict[str, float]]:
    """Rows of ``csv/metrics.csv`` (one per logging call), numbers as floats, empty cells dropped."""
    files = sorted(Path(run_dir).glob("csv/**/metrics.csv"))
    if not files:
        return []
    rows = []
    with files[-1].open() as f:
        for row in csv.DictReader(f):
            rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    return rows


def panels(run_dir: str | Path) -> list[Path]:
    """The prediction panel PNGs of a run, oldest first."""
    return sorted(Path(run_dir).glob("panels/*.png"))


def canonical_override(item: str) -> str:
    """``key=value`` with a boolean or null value in one spelling: a multirun records ``x=False`` where the same
    command without a sweep records ``x=false``; both become ``x=false``."""
    key, sep, value = item.partition("=")
    canonical = {"true": "true", "false": "false", "null": "null"}.get(value.lower())
    return f"{key}{sep}{canonical}" if sep and canonical else item


def swept_overrides(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Override keys whose value differs between the runs (what the sweep varied)."""
    values: dict[str, set[str]] = {}
    for run in runs:
        for item in run["overrides"]:
            key, _, value = item.partition("=")
            values.setdefault(key, set()).add(value)
    present = [{o.partition("=")[0] for o in run["overrides"]} for run in runs]
    return [k for k, v in values.items() if len(v) > 1 or any(k not in p for p in present)]


def metric_columns(runs: Sequence[dict[str, Any]]) -> list[str]:
    """``val/<task>/<metric>`` columns for the tasks found in the runs' metrics."""
    tasks = []
    for run in runs:
        for key in run["metrics"]:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "val" and parts[1] in (*task_names(), "mtl") and parts[1] not in tasks:
                tasks.append(parts[1])
    cols = []
    for task in tasks:
        names = TASK_COLUMNS.get(task) or [main_metric(task)[0] if task != "mtl" else "delta_m"]
        cols += [f"val/{task}/{n}" for n in names]
    return [c for c in cols if any(c in run["metrics"] for run in runs)]


def sweep_rows(runs: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the sweep table: job, swept overrides, status, params, OPs, metrics, best."""
    swept = swept_overrides(runs)
    metrics = metric_columns(runs)
    best_key = next((r["optimized_metric"] for r in runs if r["optimized_metric"]), None)
    header = ["job", "overrides", "status", "params (K, paper rule)", "params (K, all)", "OPs (G)", *metrics]
    if best_key:
        header.append(best_key)
    rows = []
    for run in runs:
        cx = run["complexity"]
        over = ", ".join(o for o in run["overrides"] if o.partition("=")[0] in swept) or "-"
        row = [
            run["name"],
            over,
            status_cell(run["status"]),
            _fmt(cx.get("paper_params"), 1e3, 1),
            _fmt(cx.get("params_total"), 1e3, 1),
            _fmt(cx.get("ops"), 1e9, 3),
            *[_fmt(run["metrics"].get(m)) for m in metrics],
        ]
        if best_key:
            row.append(_fmt(run["best_score"] if run["best_score"] is not None else run["metrics"].get(best_key)))
        rows.append(row)
    return header, rows


def status_cell(status: str, width: int = 80) -> str:
    """``completed`` / ``interrupted``, or ``failed: <first line of the error>`` (shortened to ``width``)."""
    if not status.startswith("failed"):
        return status.split(":")[0]
    first = status.splitlines()[0]
    return first if len(first) <= width else first[: width - 3] + "..."


def _fmt(value: Any, scale: float = 1.0, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value) / scale:,.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (pipes in cells escaped)."""
    esc = [[str(c).replace("|", "\\|") for c in r] for r in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def bar_plot(runs: Sequence[dict[str, Any]], metric: str, path: str | Path, title: str | None = None) -> Path:
    """A bar per run of ``metric`` (its best when it is the optimized metric), labelled by the overrides."""
    from matplotlib.figure import Figure

    swept = swept_overrides(runs)
    labels, values = [], []
    for run in runs:
        value = run["metrics"].get(metric)
        if metric == run["optimized_metric"] and run["best_score"] is not None:
            value = run["best_score"]
        over = "\n".join(o for o in run["overrides"] if o.partition("=")[0] in swept)
        labels.append(f"{run['name']}\n{over}" if over else run["name"])
        values.append(float("nan") if value is None else float(value))
    # each bar gets the width of its longest label line (about 0.085 inch per character at font size 7)
    longest = max((len(line) for label in labels for line in label.split("\n")), default=0)
    fig = Figure(figsize=(max(4.0, len(runs) * max(1.3, 0.085 * longest)), 3.8))
    ax = fig.subplots()
    bars = ax.bar(range(len(values)), values, color="#4878a8")
    ax.bar_label(bars, labels=[_fmt(v) for v in values], fontsize=7)
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(title or metric, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------------- seeds: mean +- std
SEED_KEY = "seed"


def _override_key(item: str) -> str:
    return item.partition("=")[0].lstrip("+~")


def group_by_seed(runs: Sequence[dict[str, Any]], seed_key: str = SEED_KEY) -> list[dict[str, Any]]:
    """Jobs whose overrides differ only in ``seed``, grouped in first-seen order.

    Each group: ``{"label"`` (the swept overrides but the seed, ``-`` when none), ``"overrides"``, ``"runs"``,
    ``"seeds"``}``. A job without a ``seed=`` override is its own seed (``None``).
    """
    swept = [k for k in swept_overrides(runs) if _override_key(k) != seed_key]
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for run in runs:
        rest = tuple(sorted(o for o in run["overrides"] if _override_key(o) != seed_key))
        seed = next((o.partition("=")[2] for o in run["overrides"] if _override_key(o) == seed_key), None)
        group = groups.get(rest)
        if group is None:
            label = ", ".join(o for o in rest if o.partition("=")[0] in swept) or "-"
            group = groups[rest] = {"label": label, "overrides": list(rest), "runs": [], "seeds": []}
        group["runs"].append(run)
        group["seeds"].append(seed)
    return list(groups.values())


def run_value(run: dict[str, Any], metric: str) -> float | None:
    """A run's value of ``metric``: its best score when it is the optimized metric, else the final value."""
    if metric == run.get("optimized_metric") and run.get("best_score") is not None:
        return float(run["best_score"])
    value = run["metrics"].get(metric)
    return None if value is None else float(value)


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """``(mean, sample std (n - 1), n)`` of the finite values; std is NaN for n < 2, both NaN for n = 0."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(finite)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(finite) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def completed(run: dict[str, Any]) -> bool:
    return str(run.get("status", "")).startswith("completed")


def failed(run: dict[str, Any]) -> bool:
    return str(run.get("status", "")).startswith("failed")


def group_stats(group: dict[str, Any], metrics: Sequence[str]) -> dict[str, tuple[float, float, int]]:
    """``{metric: (mean, std, n)}`` over the group's completed runs."""
    done = [r for r in group["runs"] if completed(r)]
    return {m: mean_std([run_value(r, m) for r in done]) for m in metrics}


def seed_metric_keys(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Every scalar ``val/`` and ``test/`` metric of the runs (the optimized metric first), sorted."""
    keys = sorted({k for r in runs for k in r["metrics"] if k.split("/", 1)[0] in ("val", "test")})
    best = next((r["optimized_metric"] for r in runs if r["optimized_metric"]), None)
    return ([best] if best else []) + [k for k in keys if k != best]


def _pm(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "-"
    return f"{mean:.4f} ± {std:.4f} (n={n})" if n > 1 else f"{mean:.4f} (n=1)"


def seed_rows(groups: Sequence[dict[str, Any]], metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the grouped table: one row per group, ``mean ± std (n)`` per metric."""
    header = ["group", "seeds", "failed", "unfinished", *metrics]
    rows = []
    for g in groups:
        stats = group_stats(g, metrics)
        seeds = ",".join(str(s) for s, r in zip(g["seeds"], g["runs"]) if completed(r)) or "-"
        n_failed = sum(failed(r) for r in g["runs"])
        unfinished = sum(not completed(r) and not failed(r) for r in g["runs"])  # running, interrupted, unknown
        rows.append([g["label"], seeds, str(n_failed), str(unfinished), *[_pm(*stats[m]) for m in metrics]])
    return header, rows


def seed_long_rows(groups: Sequence[dict[str, Any]], metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) with one row per (group, metric): mean, std, n (every metric, however many)."""
    header = ["group", "metric", "mean", "std", "n"]
    rows = []
    for g in groups:
        for m, (mean, std, n) in group_stats(g, metrics).items():
            if n:
                rows.append([g["label"], m, f"{mean:.4f}", "-" if math.isnan(std) else f"{std:.4f}", str(n)])
    return header, rows


def seed_bar_plot(groups: Sequence[dict[str, Any]], metric: str, path: str | Path, title: str | None = None) -> Path:
    """A bar per group: mean of ``metric`` over its seeds, error bar +- one sample std, n under the label."""
    from matplotlib.figure import Figure

    stats = [group_stats(g, [metric])[metric] for g in groups]
    labels = [f"{g['label'].replace(', ', chr(10))}\nn={n}" for g, (_, _, n) in zip(groups, stats)]
    means = [m for m, _, _ in stats]
    errs = [0.0 if math.isnan(s) else s for _, s, _ in stats]
    longest = max((len(line) for label in labels for line in label.split("\n")), default=0)
    fig = Figure(figsize=(max(4.0, len(groups) * max(1.3, 0.085 * longest)), 3.8))
    ax = fig.subplots()
    bars = ax.bar(range(len(groups)), means, yerr=errs, capsize=4, color="#4878a8")
    ax.bar_label(bars, labels=[_pm(*s).split(" (")[0] for s in stats], fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), labels, fontsize=7)
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_title(title or metric, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
