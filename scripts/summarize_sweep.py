"""Summarize a Hydra multirun sweep: a markdown table (one row per job) and a bar plot PNG.

    python scripts/summarize_sweep.py logs/train/multiruns/2025-01-01_12-00-00 [--metric val/seg/mIoU_best]

Rows: job, the overrides the sweep varied, status, parameters (paper rule and all), OPs, the final
validation metrics and the best optimized metric. Writes ``summary.md`` and ``summary.png`` in the sweep
directory (or ``--out``) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bindense.utils.results import bar_plot, find_runs, load_run, markdown_table, sweep_rows


def summarize(sweep_dir: Path, metric: str | None = None, out: Path | None = None) -> tuple[str, Path]:
    """Write ``summary.md`` and ``summary.png`` for ``sweep_dir``; return (markdown, plot path)."""
    runs = [load_run(p) for p in find_runs(sweep_dir)]
    header, rows = sweep_rows(runs)
    table = markdown_table(header, rows)
    metric = metric or next((r["optimized_metric"] for r in runs if r["optimized_metric"]), None)
    if metric is None:
        raise SystemExit("no optimized_metric in the runs; pass --metric")
    out = out or sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    text = f"# Sweep {sweep_dir}\n\n{len(runs)} jobs; bars: {metric}\n\n{table}\n"
    (out / "summary.md").write_text(text)
    plot = bar_plot(runs, metric, out / "summary.png", title=f"{sweep_dir.name}: {metric}")
    return table, plot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (or a single run directory)")
    parser.add_argument("--metric", default=None, help="metric of the bar plot (default: optimized_metric)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the sweep dir)")
    args = parser.parse_args(argv)
    table, plot = summarize(args.sweep_dir, args.metric, args.out)
    print(table)
    print(f"\nwrote {plot.parent / 'summary.md'} and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
