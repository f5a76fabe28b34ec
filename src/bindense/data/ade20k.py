"""ADE20K (SceneParsing / ADEChallengeData2016): 150 classes, raw 0 ("other") is ignored, 1..150 -> 0..149."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bindense.data.base import DenseDataset, Record
from bindense.data.io import apply_lut, label_lut, read_png_array, write_jpg, write_png
from bindense.data.scene import CLASS_NAMES

LAYOUT = """\
ADEChallengeData2016/                 <- data.root
  images/training/ADE_train_00000001.jpg ...      (20,210 RGB JPEGs)
  images/validation/ADE_val_00000001.jpg ...      (2,000)
  annotations/training/ADE_train_00000001.png ... (8-bit: 0 = other/ignored, 1..150 = classes)
  annotations/validation/ADE_val_00000001.png ...
  objectInfo150.txt                               (optional: class names)"""

HINT = """\
Get ADEChallengeData2016.zip from the MIT Scene Parsing benchmark (http://sceneparsing.csail.mit.edu)
and unzip it; no conversion is needed. For a synthetic stand-in in this layout:
  python scripts/make_synthetic.py --layout ade20k --out DIR"""


def read_class_names(root: Path) -> list[str] | None:
    """Class names from ``objectInfo150.txt`` (tab separated, name in the last column), if present."""
    path = Path(root) / "objectInfo150.txt"
    if not path.is_file():
        return None
    names = []
    for line in path.read_text().splitlines()[1:]:
        cols = line.strip().split("\t")
        if len(cols) >= 2:
            names.append(cols[-1].split(";")[0].strip())
    return names or None


class ADE20KDataset(DenseDataset):
    """ADE20K semantic segmentation in the official layout.

    Args:
        root: the ``ADEChallengeData2016`` directory.
        split: sub-directory name, ``"training"`` or ``"validation"``.
        tasks: ``("seg",)``.
        transform: a :class:`~bindense.data.transforms.DensePipeline` (default: tensors only).
        num_classes: number of classes (150); raw values above it are an error.
    """

    NAME = "ADE20K"
    LAYOUT = LAYOUT
    HINT = HINT
    SUPPORTED_TASKS = ("seg",)

    def __init__(
        self,
        root: str | Path,
        split: str = "training",
        tasks: Sequence[str] = ("seg",),
        transform: Callable | None = None,
        num_classes: int = 150,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(root, tasks, transform, ignore_index)
        self._check_root()
        img_dir, ann_dir = self.root / "images" / split, self.root / "annotations" / split
        for d in (img_dir, ann_dir):
            if not d.is_dir():
                raise self._error(f"split directory '{d}' does not exist")
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not images:
            raise self._error(f"no images in '{img_dir}'")
        self.records = [{"name": p.stem, "image": str(p), "seg": str(ann_dir / f"{p.stem}.png")} for p in images]
        self._check_records(str(img_dir))
        mapping = {0: ignore_index, **{i: i - 1 for i in range(1, num_classes + 1)}}
        mapping[ignore_index] = ignore_index  # tolerate already-ignored pixels
        self.lut = label_lut(mapping)
        self.class_names = read_class_names(self.root)

    def load_target(self, task: str, record: Record, image_shape: tuple[int, ...]) -> np.ndarray:
        raw = read_png_array(record["seg"])
        return apply_lut(raw, self.lut, record["seg"], "ADE20K annotation")


# --------------------------------------------------------------------------------- synthetic scenes in this format
def write_synthetic_sample(out: Path, split: str, index: int, sample: Mapping[str, Any]) -> str:
    """Write one rendered scene (:mod:`bindense.data.render`) as an ADE20K image + annotation; returns its stem."""
    ade_split = "training" if split == "train" else "validation"
    name = f"ADE_{'train' if split == 'train' else 'val'}_{index + 1:08d}"
    write_jpg(out / "images" / ade_split / f"{name}.jpg", sample["image"])
    write_png(out / "annotations" / ade_split / f"{name}.png", sample["seg"] + 1)  # 0 = other (ignored)
    return name


def write_synthetic_index(out: Path, entries: Mapping[str, list[str]]) -> None:
    """``objectInfo150.txt`` with the synthetic class names (ADE20K lists no split files)."""
    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{i + 1}\t0\t0\t0\t{n}" for i, n in enumerate(CLASS_NAMES)]
    (out / "objectInfo150.txt").write_text("\n".join(rows) + "\n")
