"""Channel-wise information entropy of activations before and after each binarizer (BiDense Fig. 3).

    python scripts/entropy.py <ckpt> [<ckpt> ...] [--split val] [--out DIR] [--bins 32] [--max-batches N]

For each checkpoint (its run config comes from the checkpoint): the mean channel entropy in bits of every
1-bit activation binarizer's input (a histogram estimate: ``--bins`` equal-width bins per channel over its
min..max on the split) and output (the +-1 distribution per channel), over the split. Writes
``entropy.json`` (per layer, the first binarization, the mean) and ``entropy.png`` (bars per checkpoint and
the channel-mean maps around the first binarizer) in ``--out``. The LAST line of stdout is one JSON object
``{ckpt: {"label", "first_binarization": {"before", "after"}}}``. Method: docs/RESEARCH.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bindense.analysis.entropy import DEFAULT_BINS, SPLITS, entropy_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpts", nargs="+", type=Path, help="bindense checkpoints (<run>/checkpoints/*.ckpt)")
    parser.add_argument("--split", default="val", choices=SPLITS, help="data split measured (default: val)")
    parser.add_argument("--out", type=Path, default=Path("entropy"), help="output directory (default: ./entropy)")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="histogram bins of the 'before' estimate")
    parser.add_argument("--max-batches", type=int, default=None, help="measure only the first N batches")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader workers (default: 0)")
    args = parser.parse_args(argv)
    summary = entropy_report(args.ckpts, args.out, args.split, args.bins, args.max_batches, args.num_workers)
    print(f"wrote {args.out / 'entropy.json'} and {args.out / 'entropy.png'}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
