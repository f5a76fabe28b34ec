"""Pre-flight check of a dataset split, run before training (``data.verify=quick|full|none``; docs/DATA.md).

- ``quick``: every listed file exists, opens and is not cut short (JPEG end marker, PNG ``IEND`` chunk), has
  the expected kind (an image; an 8-bit single-channel label PNG; a 16-bit depth PNG; a ``.npy`` of the right
  rank; a MATLAB file) and every target has its image's height and width. Read from file headers only.
- ``full``: ``quick``, then every sample is decoded by the dataset's own loader (label ranges, dtypes, sizes of
  the decoded arrays): whatever training would meet.

The checks run in the data-loader workers (``data.num_workers``) behind a progress bar, and ALL problems are
reported at once by :class:`DataVerificationError`. A split that passed is remembered in ``cache_dir`` under a
key made of its file list, sizes and modification times, so the next run skips it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from bindense.data.errors import DataError

log = logging.getLogger(__name__)

MODES = ("none", "quick", "full")
#: bump when the checks change, so older cache entries are not trusted
VERSION = 1
#: problems shown in the exception message (all of them are in ``error.problems`` and the report file)
SHOWN = 100
_CHUNK = 16  # records per worker task


@dataclass(frozen=True)
class Problem:
    """One bad file: what is wrong and what was expected."""

    file: str
    what: str
    expected: str

    def __str__(self) -> str:
        return f"{self.file}: {self.what}; expected {self.expected}"


class DataVerificationError(DataError, ValueError):
    """The pre-flight check found bad files; ``problems`` lists every one of them."""

    def __init__(self, label: str, mode: str, problems: list[Problem], checked: int, report: Path | None) -> None:
        self.problems = problems
        lines = [f"{label}: data.verify={mode} found {len(problems)} bad file(s) among {checked} samples:"]
        lines += [f"  {p}" for p in problems[:SHOWN]]
        if len(problems) > SHOWN:
            lines.append(f"  ... and {len(problems) - SHOWN} more")
        if report is not None:
            lines.append(f"Full list: {report}")
        lines.append("Fix or remove these files (or set data.verify=none to skip the check).")
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------------- file kinds
@dataclass(frozen=True)
class Kind:
    """What one file of a record must be, read from its header."""

    expected: str
    modes: tuple[str, ...] = ()  # PIL modes allowed (empty: any image mode)
    npy_rank: tuple[int, ...] = ()  # allowed trailing shapes of a .npy: () = (H, W) or (H, W, 1); (3,) = (H, W, 3)
    sized: bool = True  # must have the image's height and width


RGB = Kind("an RGB image (JPEG or PNG)")
LABEL8 = Kind("an 8-bit single-channel PNG (mode L or P)", modes=("L", "P", "1"))
DEPTH16 = Kind("a 16-bit single-channel PNG (depth x scale)", modes=("I;16", "I;16B", "I;16L", "I"))
NPY_MAP = Kind("a numeric .npy array of shape (H, W)")
NPY_NORMALS = Kind("a numeric .npy array of shape (H, W, 3)", npy_rank=(3,))
MAT = Kind("a MATLAB v5 .mat file", sized=False)

#: (record key, file suffix) -> kind; "*" matches any key
KINDS: dict[tuple[str, str], Kind] = {
    ("image", "*"): RGB,
    ("seg", ".png"): LABEL8,
    ("sal", ".png"): LABEL8,
    ("normals", ".png"): RGB,
    ("depth", ".png"): DEPTH16,
    ("depth", ".npy"): NPY_MAP,
    ("edge", ".npy"): NPY_MAP,
    ("normals", ".npy"): NPY_NORMALS,
    ("*", ".mat"): MAT,
}


def kind_of(key: str, path: str) -> Kind | None:
    suffix = Path(path).suffix.lower()
    return KINDS.get((key, suffix)) or KINDS.get((key, "*")) or KINDS.get(("*", suffix))


def _complete(path: str, fmt: str | None) -> bool:
    """JPEG ends with its EOI marker, PNG with its IEND chunk: a cheap test for a file cut short."""
    if fmt not in ("JPEG", "PNG"):
        return True
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 256))
        tail = f.read()
    return (b"\xff\xd9" in tail) if fmt == "JPEG" else (b"IEND" in tail)


def _header(path: str, kind: Kind) -> tuple[tuple[int, int] | None, str | None]:
    """(height, width) from the header of ``path`` and a problem, if any."""
    if os.path.getsize(path) == 0:
        return None, "empty file"
    if kind is MAT:
        with open(path, "rb") as f:
            ok = f.read(6) == b"MATLAB"
        return None, None if ok else "not a MATLAB v5 file (no 'MATLAB' header)"
    if kind.npy_rank or kind is NPY_MAP:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)  # maps the file: reads the header only
            shape, dtype = arr.shape, arr.dtype
        except Exception as err:  # noqa: BLE001 - any unreadable header is the problem to report
            return None, f"not a .npy array ({err})"
        if dtype.kind not in "biuf":
            return None, f"dtype {dtype}"
        trailing = tuple(shape[2:])
        if len(shape) < 2 or trailing not in ((kind.npy_rank,) if kind.npy_rank else ((), (1,))):
            return None, f"shape {tuple(shape)}"
        return (int(shape[0]), int(shape[1])), None
    try:
        with Image.open(path) as im:  # reads the header only
            fmt, mode, (w, h) = im.format, im.mode, im.size
    except Exception as err:  # noqa: BLE001
        return None, f"not an image PIL can read ({type(err).__name__}: {err})"
    if kind.modes and mode not in kind.modes:
        return (h, w), f"mode {mode} ({fmt})"
    if not _complete(path, fmt):
        return (h, w), f"truncated {fmt} (no end marker)"
    return (h, w), None


def check_record(record: dict[str, Any]) -> list[Problem]:
    """Header checks of one record's files (existence, kind, completeness, sizes)."""
    problems: list[Problem] = []
    image_size = None
    for key, path in record.items():
        if key == "name" or not isinstance(path, str):
            continue
        kind = kind_of(key, path)
        if kind is None:
            continue
        if not os.path.isfile(path):
            problems.append(Problem(path, "missing", kind.expected))
            continue
        size, why = _header(path, kind)
        if why is not None:
            problems.append(Problem(path, why, kind.expected))
        if key == "image":
            image_size = size
        elif kind.sized and size is not None and image_size is not None and size != image_size:
            problems.append(
                Problem(path, f"size {size[0]}x{size[1]}", f"its image's size {image_size[0]}x{image_size[1]}")
            )
    return problems


_QUOTED = re.compile(r"'([^']+)'")


def decode_record(dataset: Any, index: int) -> list[Problem]:
    """Decode sample ``index`` with the dataset's own loader; its error (which names the file) is the problem."""
    try:
        dataset.load_raw(index)
    except Exception as err:  # noqa: BLE001 - every loader failure is a finding
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        found = _QUOTED.search(text)
        file = found.group(1) if found else str(dataset.records[index].get("image"))
        return [Problem(file, f"{type(err).__name__}: {text}", "a sample that decodes cleanly")]
    return []


class _Checks(Dataset):
    """Chunks of records to check, so the data-loader workers run the checks in parallel."""

    def __init__(self, dataset: Any, mode: str) -> None:
        self.dataset, self.mode = dataset, mode

    def __len__(self) -> int:
        return math.ceil(len(self.dataset.records) / _CHUNK)

    def __getitem__(self, chunk: int) -> list[Problem]:
        problems: list[Problem] = []
        start = chunk * _CHUNK
        for i in range(start, min(start + _CHUNK, len(self.dataset.records))):
            found = check_record(self.dataset.records[i])
            if self.mode == "full" and not found:
                found = decode_record(self.dataset, i)
            problems += found
        return problems


def _keep(x: Any) -> Any:
    return x


# --------------------------------------------------------------------------------- cache
def cache_key(dataset: Any, mode: str) -> str:
    """Hash of what the verdict depends on: loader, label set, file list with sizes and mtimes."""
    h = hashlib.sha256(json.dumps([VERSION, type(dataset).__name__, list(dataset.tasks)]).encode())
    for attr in ("lut", "seg_lut", "depth_scale"):
        value = getattr(dataset, attr, None)
        if value is not None:
            h.update(np.asarray(value).tobytes())
    for record in dataset.records:
        for key, path in sorted(record.items()):
            if key != "name" and isinstance(path, str):
                try:
                    st = os.stat(path)
                    h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                except OSError:
                    h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()[:24]


def _marker(cache_dir: Path, key: str, mode: str) -> Path:
    return cache_dir / f"{key}.{mode}.json"


def is_cached(cache_dir: Path | None, key: str, mode: str) -> bool:
    """A passed ``full`` check also answers a ``quick`` one."""
    if cache_dir is None:
        return False
    wanted = ("quick", "full") if mode == "quick" else ("full",)
    return any(_marker(cache_dir, key, m).is_file() for m in wanted)


# --------------------------------------------------------------------------------- entry point
def verify_dataset(
    dataset: Any,
    mode: str = "quick",
    workers: int = 0,
    cache_dir: str | Path | None = None,
    label: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Check every record of ``dataset`` (a :class:`~bindense.data.base.DenseDataset`); raise
    :class:`DataVerificationError` listing all bad files. Returns ``{"checked", "seconds", "cached"}``."""
    if mode not in MODES:
        raise ValueError(f"data.verify={mode!r}: expected one of {list(MODES)}")
    label = label or getattr(dataset, "NAME", type(dataset).__name__)
    if mode == "none":
        return {"checked": 0, "seconds": 0.0, "cached": False}
    start = time.perf_counter()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    key = cache_key(dataset, mode)
    if is_cached(cache, key, mode):
        log.info("%s: data.verify=%s passed before for these files (cache %s)", label, mode, key)
        return {"checked": len(dataset.records), "seconds": time.perf_counter() - start, "cached": True}
    checks = _Checks(dataset, mode)
    workers = min(max(0, int(workers)), len(checks) - 1)  # no more processes than chunks of work
    loader = DataLoader(checks, batch_size=None, num_workers=workers, collate_fn=_keep)
    problems: list[Problem] = []
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task(f"verify {label} ({mode})", total=len(dataset.records))
            for i, found in enumerate(loader):
                problems += found
                bar.update(task, completed=min((i + 1) * _CHUNK, len(dataset.records)))
    else:
        for found in loader:
            problems += found
    seconds = time.perf_counter() - start
    if problems:
        report = None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            report = cache / f"{key}.{mode}.problems.txt"
            report.write_text("\n".join(str(p) for p in problems) + "\n")
        raise DataVerificationError(label, mode, problems, len(dataset.records), report)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        info = {"label": label, "mode": mode, "samples": len(dataset.records), "seconds": round(seconds, 2)}
        _marker(cache, key, mode).write_text(json.dumps(info))
    log.info("%s: data.verify=%s checked %d samples in %.1f s", label, mode, len(dataset.records), seconds)
    return {"checked": len(dataset.records), "seconds": seconds, "cached": False}


__all__ = ["MODES", "DataVerificationError", "Problem", "check_record", "verify_dataset"]
