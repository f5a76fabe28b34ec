"""Throughput of the training data pipeline (decode + augmentation + collate), in samples per second.

Usage:
  python scripts/benchmark_data.py data=synthetic --batches 50 --workers 2
  python scripts/benchmark_data.py data=ade20k data.root=/data/ADEChallengeData2016 --workers 8

``scripts/benchmark.py data=...`` calls :func:`measure_throughput` for its data line. The last printed line is
a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def measure_throughput(datamodule: Any, num_batches: int = 20, workers: int = 0) -> dict[str, Any]:
    """Iterate ``num_batches`` batches of the train loader of ``datamodule`` with ``workers`` processes.

    The first batch (worker start-up, file-system warm-up) is timed separately and excluded from the rate.

    Returns:
        ``{"samples_per_s", "batches_per_s", "batch_size", "workers", "num_batches", "first_batch_s"}``.
    """
    datamodule.num_workers = int(workers)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    n_batches, n_samples = 0, 0
    t1 = time.perf_counter()
    while n_batches < num_batches:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n_batches += 1
        n_samples += int(batch["image"].shape[0])
    elapsed = max(time.perf_counter() - t1, 1e-9)
    del it
    return {
        "samples_per_s": round(n_samples / elapsed, 2),
        "batches_per_s": round(n_batches / elapsed, 3),
        "batch_size": int(loader.batch_size),
        "workers": int(workers),
        "num_batches": n_batches,
        "first_batch_s": round(first, 3),
    }


def load_data_config(overrides: list[str]) -> Any:
    """``conf/data/<name>.yaml`` (from ``data=<name>``, default synthetic) + ``conf/paths`` + dotted overrides."""
    from omegaconf import OmegaConf

    os.environ.setdefault("PROJECT_ROOT", str(REPO))
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("data=")), "synthetic")
    data = OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml")
    if "_target_" not in data and "data" in data:  # a global data option (synthetic_mt) keeps it under data:
        data = data.data
    cfg = OmegaConf.create({"paths": OmegaConf.load(REPO / "conf" / "paths" / "default.yaml"), "data": data})
    rest = [o for o in overrides if not o.startswith("data=")]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(rest)) if rest else cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="data=<name> and data.* overrides")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    from hydra.utils import instantiate

    cfg = load_data_config(args.overrides)
    result = {"data": cfg.data.name, **measure_throughput(instantiate(cfg.data), args.batches, args.workers)}
    print(f"data {result['data']}: {result['samples_per_s']} samples/s with {args.workers} workers "
          f"(batch {result['batch_size']}, first batch {result['first_batch_s']} s)")  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
