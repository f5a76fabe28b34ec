"""Throughput of the training data pipeline (decode + augmentation + collate), in samples per second.

Usage:
  python scripts/benchmark_data.py data=synthetic --batches 50 --workers 2
  python scripts/benchmark_data.py data=ade20k data.root=/data/ADEChallengeData2016 --workers 8

``scripts/benchmark.py data=...`` calls the same :func:`bindense.analysis.benchmark.measure_throughput` for its
data line. The last printed line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

from bindense.analysis.benchmark import data_throughput
from bindense.utils.compose import compose_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="data=<name> and data.* overrides of conf/train.yaml")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    cfg = compose_config("train", args.overrides, hydra_node=False)
    result = {"data": cfg.data.name, **data_throughput(cfg, args.batches, args.workers)}
    print(f"data {result['data']}: {result['samples_per_s']} samples/s with {args.workers} workers "
          f"(batch {result['batch_size']}, first batch {result['first_batch_s']} s)")  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
