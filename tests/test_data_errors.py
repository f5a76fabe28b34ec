"""Bad input fails fast with a clear message naming the layout, the prepare script or the bad file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from bindense.data import (
    ADE20KDataset,
    CorruptFileError,
    DataError,
    DatasetLayoutError,
    DenseDataModule,
    KITTIDepthDataset,
    LabelRangeError,
    NYUDepthDataset,
    NYUDMTDataset,
    PascalContextMTDataset,
    ShapeMismatchError,
    VOCSegDataset,
    write_synthetic,
)
from bindense.data.io import write_png

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pristine")
    return {
        lay: write_synthetic(base / lay, lay, num_train=2, num_val=1, seed=3, height=24, width=32, workers=0)
        for lay in ("ade20k", "nyud_mt", "bts_nyu", "bts_kitti", "voc")
    }


@pytest.fixture
def data(pristine: dict[str, Path], tmp_path: Path):
    """A fresh, writable copy of a pristine synthetic dataset."""

    def copy(layout: str) -> Path:
        dst = tmp_path / layout
        shutil.copytree(pristine[layout], dst)
        return dst

    return copy


@pytest.mark.parametrize(
    "cls, hint",
    [
        (ADE20KDataset, "ADEChallengeData2016"),
        (VOCSegDataset, "VOC2012"),
        (NYUDepthDataset, "nyudepthv2_train_files_with_gt.txt"),
        (KITTIDepthDataset, "data_depth_annotated"),
        (NYUDMTDataset, "prepare_nyud_mt.py"),
        (PascalContextMTDataset, "PASCAL_MT"),
    ],
)
def test_missing_root_names_layout_and_preparation(cls, hint: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError) as e:
        cls(tmp_path / "nope")
    msg = str(e.value)
    assert str(tmp_path / "nope") in msg and "Expected layout" in msg and hint in msg
    assert "make_synthetic.py" in msg
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, DataError)


def test_missing_split_file(data) -> None:
    root = data("nyud_mt")
    (root / "gt_sets" / "val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"gt_sets/val\.txt"):
        NYUDMTDataset(root, "val", num_classes=13)
    with pytest.raises(DatasetLayoutError, match="missing_list.txt"):
        NYUDepthDataset(data("bts_nyu"), "missing_list.txt")


def test_missing_listed_file_is_named(data) -> None:
    root = data("nyud_mt")
    (root / "depth" / "train_00001.npy").unlink()
    with pytest.raises(DatasetLayoutError, match=r"depth/train_00001\.npy"):
        NYUDMTDataset(root, "train", tasks=("seg", "depth"), num_classes=13)
    NYUDMTDataset(root, "train", tasks=("seg",), num_classes=13)  # depth not requested: fine


def test_missing_ade_split_directory(data) -> None:
    root = data("ade20k")
    shutil.rmtree(root / "annotations" / "validation")
    with pytest.raises(DatasetLayoutError, match=r"annotations/validation"):
        ADE20KDataset(root, "validation")


def test_corrupt_image_is_named(data) -> None:
    root = data("ade20k")
    bad = root / "images" / "training" / "ADE_train_00000001.jpg"
    bad.write_bytes(b"not an image at all")
    ds = ADE20KDataset(root, "training")
    with pytest.raises(CorruptFileError, match="ADE_train_00000001.jpg"):
        ds[0]
    ds[1]  # the other sample still loads


def test_truncated_image_is_named(data) -> None:
    root = data("voc")
    img = root / "JPEGImages" / "train_00000.jpg"
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="train_00000.jpg"):
        VOCSegDataset(root, "train")[0]


def test_truncated_label_png_is_named(data) -> None:
    root = data("ade20k")
    lab = root / "annotations" / "training" / "ADE_train_00000002.png"
    lab.write_bytes(lab.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match="ADE_train_00000002.png"):
        ADE20KDataset(root, "training")[1]


def test_label_out_of_range_is_named(data) -> None:
    root = data("ade20k")
    lab = root / "annotations" / "training" / "ADE_train_00000001.png"
    write_png(lab, np.full((24, 32), 200, np.uint8))
    with pytest.raises(LabelRangeError, match=r"ADE_train_00000001.png.*\[200\]"):
        ADE20KDataset(root, "training")[0]
    nyu = data("nyud_mt")
    write_png(nyu / "segmentation" / "val_00000.png", np.full((24, 32), 14, np.uint8))
    with pytest.raises(LabelRangeError, match="val_00000.png"):
        NYUDMTDataset(nyu, "val", tasks=("seg",), num_classes=13)[0]


def test_depth_of_wrong_size_is_named(data) -> None:
    root = data("bts_nyu")
    dep = root / "official_splits/test/room_0000/sync_depth_00000.png"
    write_png(dep, np.full((12, 32), 1000, np.uint16))
    ds = NYUDepthDataset(root, "nyudepthv2_test_files_with_gt.txt", image_dir="official_splits/test")
    with pytest.raises(ShapeMismatchError, match=r"sync_depth_00000.png.*rgb_00000.jpg"):
        ds[0]
    nyu = data("nyud_mt")
    np.save(nyu / "depth" / "val_00000.npy", np.ones((24, 31), np.float32))
    with pytest.raises(ShapeMismatchError, match=r"depth/val_00000.npy"):
        NYUDMTDataset(nyu, "val", tasks=("depth",), num_classes=13)[0]


def test_8bit_depth_png_is_rejected(data) -> None:
    root = data("bts_kitti")
    ds = KITTIDepthDataset(root, "eigen_train_files_with_gt.txt")
    write_png(ds.records[0]["depth"], np.full((24, 32), 10, np.uint8))
    with pytest.raises(CorruptFileError, match="16-bit"):
        ds[0]


def test_image_label_pair_mismatch_is_named(data) -> None:
    root = data("ade20k")
    write_png(root / "annotations" / "training" / "ADE_train_00000002.png", np.ones((30, 32), np.uint8))
    with pytest.raises(ShapeMismatchError, match=r"ADE_train_00000002.png.*ADE_train_00000002.jpg"):
        ADE20KDataset(root, "training")[1]


def test_datamodule_setup_fails_fast(tmp_path: Path) -> None:
    cfg = OmegaConf.create(
        {"paths": {"data_dir": str(tmp_path)}, "data": OmegaConf.load(REPO / "conf/data/ade20k.yaml")}
    )
    data_cfg = OmegaConf.to_container(cfg, resolve=True)["data"]
    data_cfg.pop("_target_")
    dm = DenseDataModule(**data_cfg)
    with pytest.raises(DatasetLayoutError, match="ADEChallengeData2016"):
        dm.setup("fit")


def test_synthetic_cache_never_overwrites_foreign_directory(tmp_path: Path) -> None:
    from bindense.data import ensure_synthetic

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_synthetic(tmp_path / "mine", "nyud_mt", num_train=1, num_val=1, height=16, width=16)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"
