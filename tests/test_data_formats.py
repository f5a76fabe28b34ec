"""Each loader on tiny files written in its official on-disk format; label conventions checked by value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bindense.data import (
    ADE20KDataset,
    DenseDataModule,
    DenseDataset,
    KITTIDepthDataset,
    NYUDepthDataset,
    NYUDMTDataset,
    PascalContextMTDataset,
    VOCSegDataset,
    formats,
)
from bindense.data.io import write_jpg, write_png
from bindense.data.render import generate_sample
from bindense.data.voc import voc_palette

H, W = 6, 8


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _check_contract(s: dict, tasks: tuple[str, ...]) -> None:
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, H, W)
    for t in tasks:
        assert t in s
    if "seg" in s:
        assert s["seg"].dtype == torch.int64 and s["seg"].shape == (H, W)
    if "parts" in s:
        assert s["parts"].dtype == torch.int64 and s["parts"].shape == (H, W)
    for t in ("depth", "edge", "sal"):
        if t in s:
            assert s[t].dtype == torch.float32 and s[t].shape == (1, H, W)
    if "normals" in s:
        assert s["normals"].dtype == torch.float32 and s["normals"].shape == (3, H, W)
    assert s["meta"]["orig_size"] == (H, W) and isinstance(s["meta"]["name"], str)


def test_ade20k_shifts_classes_and_ignores_zero(tmp_path: Path) -> None:
    raw = np.zeros((H, W), np.uint8)
    raw[0, :3] = [0, 1, 150]
    raw[1:] = 7
    write_jpg(tmp_path / "images/training/ADE_train_00000001.jpg", _rgb())
    write_png(tmp_path / "annotations/training/ADE_train_00000001.png", raw)
    (tmp_path / "objectInfo150.txt").write_text(
        "Idx\tRatio\tTrain\tVal\tName\n1\t0.1\t1\t1\twall\n2\t0.1\t1\t1\tbuilding;edifice\n"
    )
    ds = ADE20KDataset(tmp_path, "training")
    s = ds[0]
    _check_contract(s, ("seg",))
    assert s["seg"][0, :3].tolist() == [255, 0, 149]
    assert s["seg"][1:].unique().tolist() == [6]
    assert s["meta"]["name"] == "ADE_train_00000001"
    assert ds.class_names == ["wall", "building"]


def test_voc_palette_png_keeps_indices_and_void(tmp_path: Path) -> None:
    raw = np.zeros((H, W), np.uint8)
    raw[0, :3] = [0, 20, 255]
    raw[2] = 15
    write_jpg(tmp_path / "JPEGImages/2007_000032.jpg", _rgb())
    write_png(tmp_path / "SegmentationClass/2007_000032.png", raw, palette=voc_palette())
    assert Image.open(tmp_path / "SegmentationClass/2007_000032.png").mode == "P"
    (tmp_path / "ImageSets/Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("2007_000032\n")
    ds = VOCSegDataset(tmp_path, "val")
    s = ds[0]
    _check_contract(s, ("seg",))
    assert s["seg"][0, :3].tolist() == [0, 20, 255]
    assert (s["seg"][2] == 15).all()
    assert ds.class_names[15] == "person"


def _bts_pair(root: Path, rgb: str, depth: str, value: np.ndarray, ext: str = ".jpg") -> None:
    if ext == ".png":
        (root / rgb).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb()).save(root / rgb)
    else:
        write_jpg(root / rgb, _rgb())
    write_png(root / depth, value.astype(np.uint16))


def test_nyu_bts_depth_scale_and_split_dirs(tmp_path: Path) -> None:
    d = np.full((H, W), 1500, np.uint16)
    d[0, 0] = 0
    _bts_pair(tmp_path, "sync/kitchen_0001/rgb_00001.jpg", "sync/kitchen_0001/sync_depth_00001.png", d)
    _bts_pair(tmp_path, "official_splits/test/bathroom/rgb_00045.jpg",
              "official_splits/test/bathroom/sync_depth_00045.png", d * 2)  # fmt: skip
    (tmp_path / "train.txt").write_text("/kitchen_0001/rgb_00001.jpg /kitchen_0001/sync_depth_00001.png 518.8579\n")
    (tmp_path / "test.txt").write_text("bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579\n")
    s = NYUDepthDataset(tmp_path, "train.txt")[0]
    _check_contract(s, ("depth",))
    assert s["depth"][0, 0, 0] == 0.0 and torch.allclose(s["depth"][0, 1:], torch.tensor(1.5))
    assert s["meta"]["name"] == "kitchen_0001/rgb_00001"
    t = NYUDepthDataset(tmp_path, "test.txt", image_dir="official_splits/test")[0]
    assert torch.allclose(t["depth"][0, 1:], torch.tensor(3.0))


def test_kitti_bts_divides_by_256_and_drops_frames_without_gt(tmp_path: Path) -> None:
    d = np.zeros((H, W), np.uint16)
    d[3:, :] = 20 * 256
    rgb = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    dep = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    _bts_pair(tmp_path, rgb, f"data_depth_annotated/{dep}", d, ext=".png")
    (tmp_path / "eigen_test_files_with_gt.txt").write_text(
        f"{rgb} {dep} 721.5377\n2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000070.png None 721.5377\n"
    )
    ds = KITTIDepthDataset(tmp_path, "eigen_test_files_with_gt.txt")
    assert len(ds) == 1 and ds.num_without_gt == 1
    s = ds[0]
    _check_contract(s, ("depth",))
    assert (s["depth"][0, :3] == 0).all() and torch.allclose(s["depth"][0, 3:], torch.tensor(20.0))


def test_nyud_mt_conventions(tmp_path: Path) -> None:
    seg = np.zeros((H, W), np.uint8)
    seg[0, :3] = [0, 1, 40]
    depth = np.full((H, W), 2.5, np.float32)
    depth[0, 0], depth[0, 1] = 0.0, np.nan
    normals = np.zeros((H, W, 3), np.float32)
    normals[1:] = [0.0, 2.0, 0.0]  # not unit: re-normalised
    edge = np.zeros((H, W), np.float32)
    edge[2] = 1.0
    write_jpg(tmp_path / "images/0001.jpg", _rgb())
    write_png(tmp_path / "segmentation/0001.png", seg)
    for sub, arr in (("depth", depth), ("normals", normals), ("edge", edge)):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "0001.npy", arr)
    (tmp_path / "gt_sets").mkdir()
    (tmp_path / "gt_sets/val.txt").write_text("0001\n")
    ds = NYUDMTDataset(tmp_path, "val", tasks=("seg", "depth", "normals", "edge"))
    s = ds[0]
    _check_contract(s, ("seg", "depth", "normals", "edge"))
    assert s["seg"][0, :3].tolist() == [255, 0, 39] and (s["seg"][1:] == 255).all()
    assert s["depth"][0, 0, 0] == 0 and s["depth"][0, 0, 1] == 0 and s["depth"][0, 0, 2] == 2.5
    assert (s["normals"][:, 0] == 0).all()
    assert torch.allclose(s["normals"][:, 1:], torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, H - 1, W))
    assert s["edge"][0, 2].eq(1).all() and s["edge"].sum() == W
    assert ds.class_names[0] == "wall" and len(ds.class_names) == 40
    only_depth = NYUDMTDataset(tmp_path, "val", tasks=("depth",))[0]
    assert set(only_depth) == {"image", "depth", "meta"}


def _pascal_root(tmp_path: Path) -> Path:
    from scipy.io import savemat

    r = tmp_path
    ids = ["2008_000001", "2008_000002"]
    for i, name in enumerate(ids):
        write_jpg(r / f"JPEGImages/{name}.jpg", _rgb(i))
        seg = np.full((H, W), 15 if i == 0 else 0, np.uint8)
        seg[0, 0] = 255
        write_png(r / f"semseg/VOC12/{name}.png", seg, palette=voc_palette())
        sal = np.zeros((H, W), np.uint8)
        sal[:, :4] = 200
        write_png(r / f"sal_distill/{name}.png", sal)
        nrm = np.zeros((H, W, 3), np.uint8)
        nrm[:] = [128, 255, 128]  # ~ (0, 1, 0)
        (r / "normals_distill").mkdir(exist_ok=True)
        Image.fromarray(nrm).save(r / f"normals_distill/{name}.png")
        label_map = np.full((H, W), 3, np.uint16)  # context class 3 (not shared with NYU)
        label_map[:, W // 2 :] = 5  # context class 5 = "wall" (shared with NYU)
        (r / "pascal-context/trainval").mkdir(parents=True, exist_ok=True)
        savemat(r / f"pascal-context/trainval/{name}.mat", {"LabelMap": label_map})
        obj_dtype = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
        part_dtype = [("part_name", "O"), ("mask", "O")]
        if i == 0:  # a person: head on row 0-1, torso rows 2-3, left lower leg rows 4-5
            mask = np.ones((H, W), np.uint8)
            parts = np.zeros((1, 3), dtype=part_dtype)
            for j, (pname, rows) in enumerate((("head", slice(0, 2)), ("torso", slice(2, 4)), ("llleg", slice(4, 6)))):
                pm = np.zeros((H, W), np.uint8)
                pm[rows] = 1
                parts[0, j] = (pname, pm)
            objs = np.zeros((1, 1), dtype=obj_dtype)
            objs[0, 0] = ("person", 15, mask, parts)
        else:  # a chair only
            objs = np.zeros((1, 1), dtype=obj_dtype)
            objs[0, 0] = ("chair", 9, np.ones((H, W), np.uint8), np.zeros((1, 0), dtype=part_dtype))
        anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
        anno[0, 0] = (name, objs)
        (r / "human_parts").mkdir(exist_ok=True)
        savemat(r / f"human_parts/{name}.mat", {"anno": anno})
    (r / "ImageSets/Context").mkdir(parents=True)
    (r / "ImageSets/Context/train.txt").write_text("\n".join(ids) + "\n")
    (r / "json").mkdir()
    (r / "json/nyu_classes.json").write_text(json.dumps(["wall", "floor", "unknown"]))
    (r / "json/context_classes.json").write_text(json.dumps({"aeroplane": 3, "wall": 5, "floor": 7, "tvmonitor": 9}))
    return r


def test_pascal_context_mt_all_tasks(tmp_path: Path) -> None:
    root = _pascal_root(tmp_path)
    tasks = ("seg", "parts", "sal", "normals", "edge")
    ds = PascalContextMTDataset(root, "train", tasks=tasks)
    s0, s1 = ds[0], ds[1]
    _check_contract(s0, tasks)
    assert s0["seg"][0, 0] == 255 and (s0["seg"].flatten()[1:] == 15).all()
    assert s0["parts"][0].unique().tolist() == [1] and s0["parts"][2].unique().tolist() == [2]
    assert s0["parts"][5].unique().tolist() == [6]
    assert (s1["parts"] == 0).all()  # no person: background, as the reference loader
    assert s0["sal"][0, :, :4].eq(1).all() and s0["sal"][0, :, 4:].eq(0).all()
    # normals kept only on NYU-shared classes (right half), unit there
    assert (s0["normals"][:, :, : W // 2] == 0).all()
    assert torch.allclose(s0["normals"][:, :, W // 2 :].norm(dim=0), torch.tensor(1.0), atol=1e-5)
    assert s0["normals"][1, 0, -1] > 0.99
    # edges: the LabelMap boundary between columns W/2-1 and W/2
    assert s0["edge"][0, :, W // 2 - 1].eq(1).all() and s0["edge"].sum() == H
    ign = PascalContextMTDataset(root, "train", tasks=("parts",), parts_ignore_no_person=True)
    assert (ign[1]["parts"] == 255).all() and ign[0]["parts"].max() == 6


# ------------------------------------------------------------------------------ the format registry
class _ToyDepth(DenseDataset):
    """A format defined inside this test only: ``<split>.txt`` lists stems of ``rgb/<stem>.png`` + ``d/<stem>.npy``."""

    NAME = "toy"
    SUPPORTED_TASKS = ("depth",)

    def __init__(self, root, split="train", tasks=("depth",), transform=None, ignore_index=255) -> None:
        super().__init__(root, tasks, transform, ignore_index)
        self._check_root()
        stems = self._read_split(self.root / f"{split}.txt")
        self.records = [
            {"name": s, "image": str(self.root / "rgb" / f"{s}.png"), "depth": str(self.root / "d" / f"{s}.npy")}
            for s in stems
        ]

    def load_target(self, task, record, image_shape):
        return np.load(record["depth"])


def _toy_sample(out: Path, split: str, index: int, sample) -> str:
    stem = f"{split}{index}"
    write_png(out / "rgb" / f"{stem}.png", sample["image"])
    (out / "d").mkdir(parents=True, exist_ok=True)
    np.save(out / "d" / f"{stem}.npy", sample["depth"])
    return stem


def _toy_index(out: Path, entries) -> None:
    for split, stems in entries.items():
        (out / f"{split}.txt").write_text("\n".join(stems) + "\n")


def test_a_format_registered_in_a_test_is_read_written_and_cached(tmp_path: Path) -> None:
    """Registering one Format is all it takes: the synthetic writer, the cache and the datamodule find it."""
    toy = formats.Format("toy", _ToyDepth, _toy_sample, _toy_index)
    with formats.FORMATS.temporarily("toy", toy):
        with pytest.raises(ValueError, match="already registered"):
            formats.register_format(formats.Format("toy", _ToyDepth, _toy_sample, _toy_index))
        dm = DenseDataModule(
            "toy", str(tmp_path / "toy"), "toy", ["depth"], batch_size=2, num_workers=0, verify="quick",
            synthetic={"num_train": 3, "num_val": 1, "seed": 5, "height": 24, "width": 32, "workers": 0},
        )  # fmt: skip
        dm.setup("fit")
        assert (tmp_path / "toy" / "train.txt").read_text().split() == ["train0", "train1", "train2"]
        assert len(dm.datasets["train"]) == 3 and len(dm.datasets["val"]) == 1
        depth = dm.datasets["val"][0]["depth"]
        assert torch.equal(depth[0], torch.from_numpy(generate_sample(5, "val", 0, 24, 32)["depth"]))
    assert "toy" not in formats.FORMATS
    with pytest.raises(ValueError, match=r"unknown data layout 'nope' \(data.layout\); registered: ade20k"):
        DenseDataModule("x", str(tmp_path), "nope", ["depth"])
