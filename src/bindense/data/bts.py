"""Monocular depth in the BTS layout: NYUv2 (PNG / 1000 = metres) and KITTI Eigen split (PNG / 256).

A BTS filenames file lists one sample per line: ``<rgb path> <depth path> <focal>``, both paths relative
to the image / depth directories (a leading ``/`` is tolerated); a depth path ``None`` (KITTI frames
without ground truth) drops the line. Depth 0 = invalid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bindense.data.base import DenseDataset, Record
from bindense.data.errors import CorruptFileError
from bindense.data.io import read_png_array, write_jpg, write_png
from bindense.data.voc import resolve_split

NYU_LAYOUT = """\
nyu_depth_v2/                                   <- data.root
  sync/<scene>/rgb_00000.jpg, sync/<scene>/sync_depth_00000.png ...    (train, 16-bit PNG, mm)
  official_splits/test/<scene>/rgb_00000.jpg, .../sync_depth_00000.png (654 test pairs)
  nyudepthv2_train_files_with_gt.txt   (lines: /<scene>/rgb_00000.jpg /<scene>/sync_depth_00000.png 518.8579)
  nyudepthv2_test_files_with_gt.txt    (lines: <scene>/rgb_00000.jpg <scene>/sync_depth_00000.png 518.8579)"""

NYU_HINT = """\
Follow the BTS instructions (https://github.com/cleinc/bts, pytorch/README): the 'sync' training set
(sync.zip) and the official test split extracted from nyu_depth_v2_labeled.mat
(utils/extract_official_train_test_set_from_mat.py) go under data.root, with the two filenames files
copied from BTS's train_test_inputs/. Synthetic stand-in: python scripts/make_synthetic.py --layout bts --out DIR"""

KITTI_LAYOUT = """\
kitti_dataset/                                   <- data.root
  2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000000.png ...   (KITTI raw RGB)
  data_depth_annotated/2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02/0000000000.png
                                                  (16-bit PNG, depth = value / 256, 0 = no LiDAR point)
  eigen_train_files_with_gt.txt   (lines: <rgb path> <depth path or None> 721.5377)
  eigen_test_files_with_gt.txt"""

KITTI_HINT = """\
Download the KITTI raw synced+rectified data (http://www.cvlibs.net/datasets/kitti/raw_data.php) and the
annotated depth maps (data_depth_annotated.zip, depth completion benchmark); merge its train/ and val/
folders into data_depth_annotated/ and copy the Eigen filenames files from BTS's train_test_inputs/.
Synthetic stand-in: python scripts/make_synthetic.py --layout kitti --out DIR"""


def parse_filenames_file(lines: Sequence[str]) -> list[tuple[str, str | None, float | None]]:
    """Parse BTS filenames lines into ``(rgb, depth or None, focal or None)``."""
    out = []
    for ln in lines:
        parts = ln.split()
        rgb = parts[0].lstrip("/")
        depth = parts[1].lstrip("/") if len(parts) > 1 and parts[1] != "None" else None
        focal = float(parts[2]) if len(parts) > 2 else None
        out.append((rgb, depth, focal))
    return out


class BTSDepthDataset(DenseDataset):
    """Depth pairs listed by a BTS filenames file.

    Args:
        root: dataset root.
        split: the filenames file (path relative to ``root`` or absolute).
        tasks: ``("depth",)``.
        image_dir / depth_dir: directories (relative to ``root``) the listed paths are relative to.
        depth_scale: PNG value per metre (NYUv2 1000, KITTI 256).
    """

    NAME = "BTS depth"
    LAYOUT = NYU_LAYOUT
    HINT = NYU_HINT
    SUPPORTED_TASKS = ("depth",)

    def __init__(
        self,
        root: str | Path,
        split: str,
        tasks: Sequence[str] = ("depth",),
        transform: Callable | None = None,
        image_dir: str = ".",
        depth_dir: str = ".",
        depth_scale: float = 1000.0,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(root, tasks, transform, ignore_index)
        self._check_root()
        split_file = resolve_split(self.root, split if split.endswith(".txt") else f"{split}.txt", ".")
        entries = parse_filenames_file(self._read_split(split_file))
        self.num_without_gt = sum(d is None for _, d, _ in entries)
        img_root, depth_root = self.root / image_dir, self.root / depth_dir
        self.records = [
            {
                "name": str(Path(rgb).with_suffix("")),
                "image": str(img_root / rgb),
                "depth": str(depth_root / depth),
                "focal": focal,
            }
            for rgb, depth, focal in entries
            if depth is not None
        ]
        if not self.records:
            raise self._error(f"split file '{split_file}' lists no sample with ground truth")
        self._check_records(str(split_file))
        self.depth_scale = float(depth_scale)

    def load_target(self, task: str, record: Record, image_shape: tuple[int, ...]) -> np.ndarray:
        raw = read_png_array(record["depth"])
        if raw.dtype != np.uint16 and raw.dtype != np.int32:
            raise CorruptFileError(
                f"depth PNG '{record['depth']}' is {raw.dtype}; expected a 16-bit PNG (metres x {self.depth_scale:g})"
            )
        if raw.ndim != 2:
            raise CorruptFileError(f"depth PNG '{record['depth']}' has shape {raw.shape}; expected (H, W)")
        return raw.astype(np.float32) / self.depth_scale


class NYUDepthDataset(BTSDepthDataset):
    """NYUv2 depth in the BTS layout (train from ``sync/``, test from ``official_splits/test/``)."""

    NAME = "NYUv2 depth (BTS layout)"

    def __init__(self, root: str | Path, split: str = "nyudepthv2_train_files_with_gt.txt", **kwargs) -> None:
        kwargs.setdefault("image_dir", "sync")
        kwargs.setdefault("depth_dir", kwargs["image_dir"])
        kwargs.setdefault("depth_scale", 1000.0)
        super().__init__(root, split, **kwargs)


class KITTIDepthDataset(BTSDepthDataset):
    """KITTI Eigen split in the BTS layout (raw RGB + annotated depth, PNG / 256)."""

    NAME = "KITTI depth (BTS layout)"
    LAYOUT = KITTI_LAYOUT
    HINT = KITTI_HINT

    def __init__(self, root: str | Path, split: str = "eigen_train_files_with_gt.txt", **kwargs) -> None:
        kwargs.setdefault("image_dir", ".")
        kwargs.setdefault("depth_dir", "data_depth_annotated")
        kwargs.setdefault("depth_scale", 256.0)
        super().__init__(root, split, **kwargs)


# --------------------------------------------------------------------------------- synthetic scenes in this format
#: the BTS filenames files of each format: split -> file name
NYU_FILES = {"train": "nyudepthv2_train_files_with_gt.txt", "val": "nyudepthv2_test_files_with_gt.txt"}
KITTI_FILES = {"train": "eigen_train_files_with_gt.txt", "val": "eigen_test_files_with_gt.txt"}


def write_nyu_sample(out: Path, split: str, index: int, sample: Mapping[str, Any]) -> str:
    """Write one rendered scene as a BTS NYUv2 pair (depth PNG in mm); returns its filenames line."""
    sub = "sync" if split == "train" else "official_splits/test"
    scene = f"room_{index // 20:04d}"
    write_jpg(out / sub / scene / f"rgb_{index:05d}.jpg", sample["image"])
    depth = np.round(sample["depth"] * 1000).astype(np.uint16)
    write_png(out / sub / scene / f"sync_depth_{index:05d}.png", depth)
    prefix = "/" if split == "train" else ""  # the BTS train list has a leading slash, the test list none
    return f"{prefix}{scene}/rgb_{index:05d}.jpg {prefix}{scene}/sync_depth_{index:05d}.png {sample['focal']:.4f}"


def write_kitti_sample(out: Path, split: str, index: int, sample: Mapping[str, Any]) -> str:
    """Write one rendered scene as a KITTI frame (PNG) with LiDAR-like sparse depth (PNG / 256); returns its
    filenames line."""
    drive = f"2011_09_26_drive_{index // 20 + (0 if split == 'train' else 500):04d}_sync"
    rgb = f"2011_09_26/{drive}/image_02/data/{index:010d}.png"
    dep = f"{drive}/proj_depth/groundtruth/image_02/{index:010d}.png"
    write_png(out / rgb, sample["image"])  # KITTI raw frames are PNG
    # LiDAR-like sparsity: no points in the upper rows, ~30 % of the pixels below
    rng = np.random.default_rng(index)
    depth = sample["depth"].copy()
    h = depth.shape[0]
    keep = rng.random(depth.shape) < 0.3
    keep[: int(0.3 * h)] = False
    depth[~keep] = 0.0
    write_png(out / "data_depth_annotated" / dep, np.round(depth * 256).astype(np.uint16))
    return f"{rgb} {dep} {sample['focal']:.4f}"


def write_nyu_index(out: Path, entries: Mapping[str, list[str]]) -> None:
    """The two NYUv2 filenames files."""
    for split, lines in entries.items():
        (out / NYU_FILES[split]).write_text("\n".join(lines) + "\n")


def write_kitti_index(out: Path, entries: Mapping[str, list[str]]) -> None:
    """The two Eigen filenames files; the test list also names a frame without ground truth, as the real one."""
    for split, lines in entries.items():
        rows = list(lines)
        if split == "val":
            rows.append("2011_09_26/2011_09_26_drive_9999_sync/image_02/data/0000000000.png None 721.5377")
        (out / KITTI_FILES[split]).write_text("\n".join(rows) + "\n")
