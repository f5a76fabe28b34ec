"""NYUD-v2 multi-task (NYUD-MT layout of ASTMT / MTI-Net / InvPT): seg, depth, normals, edge (+ sal).

Conventions: segmentation PNG 0 = unlabelled -> ignore, 1..40 -> 0..39; depth ``.npy`` in metres
(0 or non-finite = invalid); normals ``.npy`` (H, W, 3) in [-1, 1] (zero vector = invalid, others are
re-normalised); edges ``.npy`` (H, W) binary. ``sal/`` is our extension (written by the synthetic scenes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bindense.data.base import DenseDataset, Record, normalize_normals
from bindense.data.errors import ShapeMismatchError
from bindense.data.io import apply_lut, label_lut, read_npy, read_png_array, write_jpg, write_png, write_split_lists
from bindense.data.voc import resolve_split

NYUD40_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop",
]  # fmt: skip

LAYOUT = """\
NYUD_MT/                           <- data.root
  images/<id>.jpg                  (RGB, 480x640)
  segmentation/<id>.png            (8-bit: 0 = unlabelled/ignored, 1..40 = NYU-40 classes)
  depth/<id>.npy                   (float32 (H, W), metres, 0 = invalid)
  normals/<id>.npy                 (float32 (H, W, 3), unit vectors, 0 = invalid)
  edge/<id>.npy                    (float32 (H, W), 1 = edge)
  sal/<id>.png                     (optional, our extension: 0 / 255 saliency)
  gt_sets/train.txt, gt_sets/val.txt   (one <id> per line: 795 / 654)"""

HINT = """\
Convert the official labelled NYUv2 file with
  python scripts/prepare_nyud_mt.py --mat nyu_depth_v2_labeled.mat --splits splits.mat \\
      --class-map classMapping40.mat --out NYUD_MT
or unpack the NYUD_MT archive distributed with ASTMT / MTI-Net (same layout).
Synthetic stand-in: python scripts/make_synthetic.py --layout nyud_mt --out DIR"""


class NYUDMTDataset(DenseDataset):
    """NYUD-v2 multi-task dataset.

    Args:
        root: the ``NYUD_MT`` directory.
        split: ``train`` / ``val`` (``gt_sets/<split>.txt``) or a path to an id list.
        tasks: any of ``seg, depth, normals, edge, sal``.
        num_classes: 40 (raw labels 1..num_classes).
        image_ext: extension of the images (``.jpg``).
    """

    NAME = "NYUD-MT"
    LAYOUT = LAYOUT
    HINT = HINT
    SUPPORTED_TASKS = ("seg", "depth", "normals", "edge", "sal")
    FILES = {
        "seg": ("segmentation", ".png"),
        "depth": ("depth", ".npy"),
        "normals": ("normals", ".npy"),
        "edge": ("edge", ".npy"),
        "sal": ("sal", ".png"),
    }

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = ("seg", "depth", "normals", "edge"),
        transform: Callable | None = None,
        num_classes: int = 40,
        ignore_index: int = 255,
        image_ext: str = ".jpg",
    ) -> None:
        super().__init__(root, tasks, transform, ignore_index)
        self._check_root()
        split_file = resolve_split(self.root, split, "gt_sets")
        ids = self._read_split(split_file)
        self.records = []
        for i in ids:
            rec: Record = {"name": i, "image": str(self.root / "images" / f"{i}{image_ext}")}
            for task in self.tasks:
                sub, ext = self.FILES[task]
                rec[task] = str(self.root / sub / f"{i}{ext}")
            self.records.append(rec)
        self._check_records(str(split_file))
        self.num_classes = num_classes
        self.lut = label_lut({0: ignore_index, 255: ignore_index, **{c: c - 1 for c in range(1, num_classes + 1)}})
        self.class_names = NYUD40_CLASSES if num_classes == 40 else None

    def load_target(self, task: str, record: Record, image_shape: tuple[int, ...]) -> np.ndarray:
        path = record[task]
        if task == "seg":
            return apply_lut(read_png_array(path), self.lut, path, "NYUD-MT segmentation")
        if task == "sal":
            return (read_png_array(path) > 127).astype(np.float32)
        arr = read_npy(path)
        if task == "normals":
            if arr.ndim != 3 or arr.shape[-1] != 3:
                raise ShapeMismatchError(f"normals '{path}' have shape {arr.shape}; expected (H, W, 3)")
            return normalize_normals(np.nan_to_num(arr, nan=0.0))
        arr = np.squeeze(arr, axis=-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr
        if arr.ndim != 2:
            raise ShapeMismatchError(f"{task} map '{path}' has shape {arr.shape}; expected (H, W)")
        if task == "depth":
            arr = np.where(np.isfinite(arr) & (arr > 0), arr, 0.0).astype(np.float32)
            return arr
        return (arr > 0.5).astype(np.float32)  # edge


# --------------------------------------------------------------------------------- synthetic scenes in this format
def write_synthetic_sample(out: Path, split: str, index: int, sample: Mapping[str, Any]) -> str:
    """Write one rendered scene in the NYUD-MT layout (every task, compact dtypes); returns its stem."""
    name = f"{split}_{index:05d}"
    write_jpg(out / "images" / f"{name}.jpg", sample["image"])
    write_png(out / "segmentation" / f"{name}.png", sample["seg"] + 1)  # 0 = unlabelled, 1..K = classes
    # compact dtypes (the loader casts to float32): depth float32, normals float16, edges uint8
    for key, dtype in (("depth", np.float32), ("normals", np.float16), ("edge", np.uint8)):
        (out / key).mkdir(parents=True, exist_ok=True)
        np.save(out / key / f"{name}.npy", sample[key].astype(dtype))
    write_png(out / "sal" / f"{name}.png", sample["sal"] * 255)
    return name


def write_synthetic_index(out: Path, entries: Mapping[str, list[str]]) -> None:
    """``gt_sets/<split>.txt``."""
    write_split_lists(out / "gt_sets", entries)
