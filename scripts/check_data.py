"""Pre-flight check of a dataset on its own, with the overrides train.py takes (docs/DATA.md):

    python scripts/check_data.py data=ade20k data.root=/data/ADEChallengeData2016               # quick
    python scripts/check_data.py data=ade20k data.root=/data/ADEChallengeData2016 data.verify=full
    python scripts/check_data.py data=nyu_depth data.root=... data.verify_cache_dir=null            # no cache

Checks the train and val splits (and test when the data has one) the way training does before its first step,
lists every bad file, and exits with 1 when there is one. ``data.verify=none`` in the config still checks
(``quick``): running this script asks for a check.
"""

from __future__ import annotations

import sys

import hydra
from rich.console import Console
from rich.table import Table

from bindense.data.errors import DataError
from bindense.utils.compose import compose_config


def check(overrides: list[str]) -> int:
    """Verify every split of the composed ``data`` config; 0 when all pass, 1 otherwise."""
    cfg = compose_config("train", overrides)
    mode = cfg.data.get("verify") or "quick"
    mode = "quick" if mode == "none" else mode
    dm = hydra.utils.instantiate(cfg.data, verify="none", _convert_="all")
    console = Console()
    table = Table(title=f"data.verify={mode}: {cfg.data.name} at {dm.root}")
    for col in ("split", "samples", "seconds", "result"):
        table.add_column(col)
    failed = 0
    dm.prepare_data()
    splits = ["train", "val"] + (["test"] if cfg.data.get("test_split") else [])
    for split in splits:
        try:
            dm.datasets[split] = dm.build_dataset(split)
            info = dm.verify_split(split, mode)
        except DataError as err:
            failed += 1
            console.print(str(err), style="red", markup=False, highlight=False)
            table.add_row(dm.splits[split], "-", "-", "[red]bad files[/red]")
            continue
        result = "ok (cached)" if info["cached"] else "ok"
        table.add_row(dm.splits[split], str(info["checked"]), f"{info['seconds']:.1f}", result)
    console.print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(check(sys.argv[1:]))
