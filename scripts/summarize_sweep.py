"""Summarize a Hydra multirun sweep: a markdown table (one row per job) and a bar plot PNG.

    python scripts/summarize_sweep.py logs/train/multiruns/2025-01-01_12-00-00 [--metric val/seg/mIoU_best]

Rows: job, the overrides the sweep varied, status, parameters (paper rule and all), OPs, the final
validation metrics and the best optimized metric. Writes ``summary.md`` and ``summary.png`` in the sweep
directory (or ``--out``) and prints the table.

Seeds: jobs that differ only in ``seed`` (``python train.py -m method=bnn,bidense seed=1,2,3``) are grouped
and reported as mean ± sample std (n) for every ``val/`` and ``test/`` metric, in ``summary_seeds.md`` (a wide
table and a long one) and ``summary_seeds.png`` (bars with ± std error bars); failed jobs are left out of the
statistics and counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bindense.utils.results import (
    bar_plot,
    find_runs,
    group_by_seed,
    load_run,
    markdown_table,
    metric_columns,
    seed_bar_plot,
    seed_long_rows,
    seed_metric_keys,
    seed_rows,
    sweep_rows,
)


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


def summarize_seeds(sweep_dir: Path, metric: str | None = None, out: Path | None = None) -> tuple[str, Path] | None:
    """Write ``summary_seeds.md`` / ``summary_seeds.png`` when jobs differ only in ``seed``; else None."""
    runs = [load_run(p) for p in find_runs(sweep_dir)]
    groups = group_by_seed(runs)
    if all(len(g["runs"]) < 2 for g in groups):
        return None
    metric = metric or next((r["optimized_metric"] for r in runs if r["optimized_metric"]), None)
    main = [m for m in [metric, *metric_columns(runs)] if m]
    table = markdown_table(*seed_rows(groups, list(dict.fromkeys(main))))
    long = markdown_table(*seed_long_rows(groups, seed_metric_keys(runs)))
    out = out or sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    text = (
        f"# Sweep {sweep_dir}: grouped by seed\n\n{len(groups)} groups of {len(runs)} jobs; mean ± sample std (n) "
        f"over the completed seeds; bars: {metric}\n\n{table}\n\n## Every metric\n\n{long}\n"
    )
    (out / "summary_seeds.md").write_text(text)
    plot = seed_bar_plot(groups, metric, out / "summary_seeds.png", title=f"{sweep_dir.name}: {metric}")
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
    seeds = summarize_seeds(args.sweep_dir, args.metric, args.out)
    if seeds is not None:
        print(f"\n{seeds[0]}\n\nwrote {seeds[1].parent / 'summary_seeds.md'} and {seeds[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
