"""Convert the official labelled NYUv2 file into the NYUD-MT layout read by ``conf/data/nyud_mt.yaml``.

Inputs (official sources, see docs/DATA.md#nyud-v2-multi-task):
  nyu_depth_v2_labeled.mat   https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html (labelled dataset, 2.8 GB)
  splits.mat                 the official 795 / 654 split (same page)
  classMapping40.mat         the 894 -> 40 class mapping of Gupta et al. (mapClass), or a .npy / .txt of 894 ints

Usage:
  python scripts/prepare_nyud_mt.py --mat nyu_depth_v2_labeled.mat --splits splits.mat \\
      --class-map classMapping40.mat --out data/NYUD_MT
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bindense.data.prepare_nyud import convert_labeled_mat, load_class_map, load_splits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mat", required=True, type=Path, help="nyu_depth_v2_labeled.mat (HDF5)")
    p.add_argument("--splits", required=True, type=Path, help="splits.mat with trainNdxs / testNdxs (1-based)")
    p.add_argument("--class-map", required=True, type=Path, help="classMapping40.mat (mapClass) or .npy / .txt")
    p.add_argument("--out", required=True, type=Path, help="output NYUD_MT directory")
    p.add_argument("--no-normals", action="store_true", help="do not derive normals from depth")
    p.add_argument("--limit", type=int, default=None, help="convert at most N samples per split")
    args = p.parse_args(argv)
    for path in (args.mat, args.splits, args.class_map):
        if not path.is_file():
            p.error(f"'{path}' does not exist")
    t0 = time.time()

    def progress(i: int, n: int) -> None:
        if i % 50 == 0 or i == n:
            print(f"\r{i}/{n} samples", end="", flush=True)

    out = convert_labeled_mat(
        args.mat,
        args.out,
        load_splits(args.splits),
        load_class_map(args.class_map),
        normals=not args.no_normals,
        limit=args.limit,
        progress=progress,
    )
    print(f"\nwrote NYUD-MT layout to {out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
