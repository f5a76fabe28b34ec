"""Common machinery of the dataset modules: sample records, loading, validation, transform, meta."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch.utils.data import Dataset

from bindense.data.errors import layout_error
from bindense.data.io import check_same_size, list_missing, read_rgb
from bindense.data.transforms import DensePipeline

Record = dict[str, Any]


def normalize_normals(n: np.ndarray) -> np.ndarray:
    """Rescale non-zero vectors to unit length; near-zero vectors (invalid) become exactly 0."""
    n = n.astype(np.float32, copy=True)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = norm > 1e-3
    np.divide(n, norm, out=n, where=valid)
    n[~valid[..., 0]] = 0.0
    return n


class DenseDataset(Dataset):
    """Base class: a list of records (file paths per sample) read into the sample dict of the contract.

    Subclasses set :attr:`NAME`, :attr:`LAYOUT`, :attr:`HINT`, :attr:`SUPPORTED_TASKS`, fill
    ``self.records`` (dicts with ``name``, ``image`` and one path entry per task) in ``__init__`` and
    implement :meth:`load_target`.

    ``__getitem__`` returns ``image`` (3, H, W), the selected task tensors and
    ``meta = {"name": str, "orig_size": (H, W)}`` (size of the image on disk).
    """

    NAME: ClassVar[str] = "dataset"
    LAYOUT: ClassVar[str] = ""
    HINT: ClassVar[str] = ""
    SUPPORTED_TASKS: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        root: str | Path,
        tasks: Sequence[str],
        transform: Callable[[dict], dict] | None = None,
        ignore_index: int = 255,
    ) -> None:
        self.root = Path(root).expanduser()
        self.tasks = tuple(tasks)
        bad = [t for t in self.tasks if t not in self.SUPPORTED_TASKS]
        if bad:
            raise ValueError(f"{self.NAME} does not provide tasks {bad}; it provides {list(self.SUPPORTED_TASKS)}")
        self.ignore_index = ignore_index
        self.transform = transform if transform is not None else DensePipeline(None, ignore_index=ignore_index)
        self.records: list[Record] = []

    # -- helpers for subclasses ---------------------------------------------------------------
    def _error(self, problem: str, missing: list[str] | None = None):
        return layout_error(self.NAME, problem, self.LAYOUT, self.HINT, missing)

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise self._error(f"dataset root '{self.root}' does not exist (set data.root=...)")

    def _read_split(self, path: Path) -> list[str]:
        """Non-empty, stripped lines of a split file (missing file -> layout error)."""
        if not path.is_file():
            raise self._error(f"split file '{path}' does not exist")
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        if not lines:
            raise self._error(f"split file '{path}' is empty")
        return lines

    def _check_records(self, source: str) -> None:
        """Fail fast when files listed by ``source`` (a split file / directory) are missing."""
        paths = [v for rec in self.records for k, v in rec.items() if k != "name" and isinstance(v, str)]
        missing = list_missing(paths)
        if missing:
            raise self._error(f"{len(missing)} files listed by '{source}' are missing", missing)

    # -- Dataset API ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def load_target(self, task: str, record: Record, image_shape: tuple[int, ...]) -> np.ndarray:
        """Read one target of ``record`` in the raw-sample convention of :class:`DensePipeline`."""
        raise NotImplementedError

    def load_raw(self, index: int) -> dict[str, Any]:
        """The untransformed sample: numpy image and targets (labels already mapped), plus meta."""
        rec = self.records[index]
        image = read_rgb(rec["image"])
        sample: dict[str, Any] = {"image": image}
        for task in self.tasks:
            arr = self.load_target(task, rec, image.shape)
            check_same_size(image.shape, arr, rec["image"], rec.get(task) or rec.get("context") or rec["image"])
            sample[task] = arr
        sample["meta"] = {"name": str(rec["name"]), "orig_size": (int(image.shape[0]), int(image.shape[1]))}
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.transform(self.load_raw(index))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root='{self.root}', n={len(self)}, tasks={list(self.tasks)})"


__all__ = ["DenseDataset", "Record", "normalize_normals"]
