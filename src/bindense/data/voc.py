"""PASCAL VOC 2012 semantic segmentation: 21 classes (0 = background), 255 = void (ignored)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bindense.data.base import DenseDataset, Record
from bindense.data.io import apply_lut, label_lut, read_png_array, write_jpg, write_png, write_split_lists

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip

LAYOUT = """\
VOCdevkit/VOC2012/                     <- data.root
  JPEGImages/2007_000032.jpg ...
  SegmentationClass/2007_000032.png ...   (palette PNG: indices 0..20, 255 = void/border)
  ImageSets/Segmentation/train.txt        (1,464 ids)   val.txt (1,449 ids)
  [optional SBD augmentation: SegmentationClassAug/*.png + ImageSets/Segmentation/train_aug.txt]"""

HINT = """\
Get VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ and untar it;
data.root points at VOCdevkit/VOC2012. For the 10,582-image SBD-augmented train set put the
SegmentationClassAug PNGs and train_aug.txt there and set data.train_split=train_aug
data.options.label_dir=SegmentationClassAug. Synthetic stand-in:
  python scripts/make_synthetic.py --layout voc --out DIR"""


def voc_palette(n: int = 256) -> np.ndarray:
    """The standard VOC colour map (bit-interleaved), ``(n, 3) uint8``."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def resolve_split(root: Path, split: str, default_dir: str) -> Path:
    """A split given as a name (``train`` -> ``<root>/<default_dir>/train.txt``) or a path (``*.txt``)."""
    if split.endswith(".txt"):
        p = Path(split).expanduser()
        return p if p.is_absolute() else root / p
    return root / default_dir / f"{split}.txt"


class VOCSegDataset(DenseDataset):
    """PASCAL VOC 2012 segmentation in the official VOCdevkit layout.

    Args:
        root: the ``VOCdevkit/VOC2012`` directory.
        split: ``train`` / ``val`` / ``trainval`` / ``train_aug`` or a path to an id list.
        tasks: ``("seg",)``.
        label_dir: ``SegmentationClass`` (official) or ``SegmentationClassAug`` (SBD).
        num_classes: 21.
    """

    NAME = "PASCAL VOC 2012"
    LAYOUT = LAYOUT
    HINT = HINT
    SUPPORTED_TASKS = ("seg",)

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = ("seg",),
        transform: Callable | None = None,
        num_classes: int = 21,
        ignore_index: int = 255,
        label_dir: str = "SegmentationClass",
        image_dir: str = "JPEGImages",
    ) -> None:
        super().__init__(root, tasks, transform, ignore_index)
        self._check_root()
        split_file = resolve_split(self.root, split, "ImageSets/Segmentation")
        ids = self._read_split(split_file)
        self.records = [
            {
                "name": i,
                "image": str(self.root / image_dir / f"{i}.jpg"),
                "seg": str(self.root / label_dir / f"{i}.png"),
            }
            for i in ids
        ]
        self._check_records(str(split_file))
        self.lut = label_lut({**{i: i for i in range(num_classes)}, 255: ignore_index})
        self.class_names = VOC_CLASSES[:num_classes] if num_classes <= len(VOC_CLASSES) else None

    def load_target(self, task: str, record: Record, image_shape: tuple[int, ...]) -> np.ndarray:
        raw = read_png_array(record["seg"])
        return apply_lut(raw, self.lut, record["seg"], "VOC segmentation")


# --------------------------------------------------------------------------------- synthetic scenes in this format
def write_synthetic_sample(out: Path, split: str, index: int, sample: Mapping[str, Any]) -> str:
    """Write one rendered scene as a VOC JPEG + palette PNG (object borders void, as in VOC); returns its stem."""
    name = f"{split}_{index:05d}"
    write_jpg(out / "JPEGImages" / f"{name}.jpg", sample["image"])
    seg = sample["seg"].copy()
    seg[(sample["edge"] > 0) & (sample["sal"] > 0)] = 255  # VOC marks object borders as void
    write_png(out / "SegmentationClass" / f"{name}.png", seg, palette=voc_palette())
    return name


def write_synthetic_index(out: Path, entries: Mapping[str, list[str]]) -> None:
    """``ImageSets/Segmentation/<split>.txt``."""
    write_split_lists(out / "ImageSets" / "Segmentation", entries)
