"""Write a synthetic indoor-scene dataset in one of the real on-disk layouts.

Usage:
  python scripts/make_synthetic.py --layout nyud_mt --out data/syn_nyud --num 400 --seed 0
  python scripts/make_synthetic.py --layout ade20k --out /tmp/ADEChallengeData2016 --num 40
  python scripts/make_synthetic.py --layout bts --out /tmp/nyu_depth_v2 --num 40      # BTS, NYUv2 style
  python scripts/make_synthetic.py --layout kitti --out /tmp/kitti_dataset --num 40   # BTS, KITTI style

Layouts: every format of ``bindense.data.formats.FORMATS`` and its short names (docs/FORMATS.md). ``--num`` is
the number of training scenes; ``--num-val`` defaults to a quarter of it. Then point a data config at it, e.g.
``python train.py data=ade20k data.root=/tmp/ADEChallengeData2016``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bindense.data.formats import FORMATS
from bindense.data.synthetic import write_synthetic


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", default="nyud_mt", choices=sorted([*FORMATS, *FORMATS.aliases]))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--num", type=int, default=400, help="training scenes")
    p.add_argument("--num-val", type=int, default=None, help="validation scenes (default: num // 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs, at most 8)")
    args = p.parse_args(argv)
    num_val = args.num_val if args.num_val is not None else max(1, args.num // 4)
    t0 = time.time()
    out = write_synthetic(args.out, args.layout, args.num, num_val, args.seed,
                          args.height, args.width, args.workers)  # fmt: skip
    print(f"wrote {args.num} + {num_val} synthetic scenes ({args.layout}) to {out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
