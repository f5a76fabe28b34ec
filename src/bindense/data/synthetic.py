"""Synthetic datasets: rendered scenes (:mod:`bindense.data.render`) written in a real on-disk format, and a cache.

:func:`write_synthetic` writes a dataset in any format of :data:`bindense.data.formats.FORMATS` (NYUD-MT,
ADE20K, VOC, BTS NYUv2, BTS KITTI, PASCAL-Context MT) with that format's writer, so the real reader reads it;
:func:`ensure_synthetic` keeps a cache identified by its generation parameters.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bindense.data.formats import get_format
from bindense.data.render import SPLIT_IDS, generate_sample

GENERATOR_VERSION = 1
MARKER = ".synthetic.json"


def _job(args: tuple) -> tuple[str, int, str]:
    out, layout, split, index, seed, height, width = args
    sample = generate_sample(seed, split, index, height, width)
    return split, index, get_format(layout).write_sample(Path(out), split, index, sample)


def write_synthetic(
    out: str | Path,
    layout: str = "nyud_mt",
    num_train: int = 400,
    num_val: int = 100,
    seed: int = 0,
    height: int = 128,
    width: int = 160,
    workers: int | None = None,
) -> Path:
    """Render ``num_train + num_val`` scenes and write them into ``out`` in ``layout``.

    Args:
        workers: processes to use (default: all CPUs, at most 8; 0 or 1 renders in this process).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.
    """
    layout = get_format(layout).name
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), layout, split, i, seed, height, width)
            for split, n in (("train", num_train), ("val", num_val)) for i in range(n)]  # fmt: skip
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    if workers > 1 and len(jobs) > 8:
        ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            results = list(ex.map(_job, jobs, chunksize=max(1, len(jobs) // (workers * 8))))
    else:
        results = [_job(j) for j in jobs]
    entries: dict[str, list[str]] = {"train": [], "val": []}
    for split, _, entry in sorted(results, key=lambda r: (SPLIT_IDS[r[0]], r[1])):
        entries[split].append(entry)
    get_format(layout).write_index(out, {k: v for k, v in entries.items() if v})
    return out


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def ensure_synthetic(root: str | Path, layout: str = "nyud_mt", **params: Any) -> Path:
    """Make sure ``root`` holds the synthetic dataset described by ``params``; generate it if not.

    The cache is identified by a marker file with the generation parameters; a cache with other
    parameters is regenerated. A non-empty directory without the marker is never touched.
    Generation happens in a temporary sibling directory renamed into place (safe for concurrent runs).
    """
    layout = get_format(layout).name
    root = Path(root).expanduser()
    want = {"layout": layout, "version": GENERATOR_VERSION, **{k: v for k, v in params.items() if k != "workers"}}
    if _read_marker(root) == want:
        return root
    if not (root / MARKER).is_file() and root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"synthetic cache '{root}' exists, is not empty and has no {MARKER}: refusing to overwrite it; "
            "point data.root at an empty or new directory"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    write_synthetic(tmp, layout=layout, **params)
    (tmp / MARKER).write_text(json.dumps(want, indent=1))
    if root.exists():
        if _read_marker(root) == want:  # a concurrent run finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return root
        old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(root, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, root)
    except OSError:  # a concurrent run won the race
        shutil.rmtree(tmp, ignore_errors=True)
    logging.getLogger(__name__).info("generated synthetic %s dataset in %s (%.1f s)", layout, root, time.time() - t0)
    return root
