"""DenseDataModule built from every conf/data/*.yaml (real configs read synthetic data in their layout)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bindense.analysis.benchmark import measure_throughput
from bindense.data import DenseDataModule, write_synthetic
from bindense.data.scene import NUM_CLASSES
from bindense.utils.compose import compose_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (REPO / "conf" / "data").glob("*.yaml"))
REQUIRED = ("name", "root", "tasks", "num_classes", "num_parts", "max_depth", "min_depth", "depth_crop",
            "ignore_index", "batch_size", "num_workers", "crop_size")  # fmt: skip


def load_data_yaml(name: str):
    """``conf/data/<name>.yaml``; a global-package option (synthetic_mt, which also selects model/module) keeps
    its settings under ``data:``."""
    raw = OmegaConf.load(REPO / f"conf/data/{name}.yaml")
    return raw.data if "_target_" not in raw and "data" in raw else raw


def data_cfg(name: str, data_dir: Path, **over):
    cfg = OmegaConf.create({"paths": {"data_dir": str(data_dir)}, "data": load_data_yaml(name)})
    for k, v in over.items():
        OmegaConf.update(cfg, f"data.{k}", v, merge=False)
    return cfg


@pytest.fixture(scope="module")
def real_layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    layouts = {"ade20k": "ade20k", "voc2012": "voc", "nyu_depth": "bts_nyu", "kitti_depth": "bts_kitti",
               "nyud_mt": "nyud_mt", "pascal_context_mt": "pascal_context_mt"}  # fmt: skip
    return {
        name: write_synthetic(base / lay, lay, num_train=4, num_val=2, seed=0, height=48, width=64, workers=0)
        for name, lay in layouts.items()
    }


def test_configs_exist_and_declare_the_contract_keys() -> None:
    assert {"synthetic", "synthetic_depth", "synthetic_mt", "ade20k", "voc2012", "nyu_depth", "kitti_depth",
            "nyud_mt", "pascal_context_mt"} <= set(CONFIGS)  # fmt: skip
    for name in CONFIGS:
        raw = load_data_yaml(name)
        assert raw._target_ == "bindense.data.DenseDataModule"
        for key in REQUIRED:
            assert key in raw, f"{name}.yaml lacks {key}"
        assert raw.ignore_index == 255
    expected = {"ade20k": 150, "voc2012": 21, "nyud_mt": 40, "pascal_context_mt": 21, "synthetic": NUM_CLASSES}
    for name, k in expected.items():
        assert load_data_yaml(name).num_classes == k
    assert OmegaConf.load(REPO / "conf/data/nyu_depth.yaml").max_depth == 10
    assert OmegaConf.load(REPO / "conf/data/kitti_depth.yaml").max_depth == 80


@pytest.mark.parametrize("name", ["ade20k", "voc2012", "nyu_depth", "kitti_depth", "nyud_mt", "pascal_context_mt"])
def test_real_config_reads_its_layout(name: str, real_layouts: dict[str, Path], tmp_path: Path) -> None:
    over = {"root": str(real_layouts[name]), "num_workers": 0, "batch_size": 2, "eval_batch_size": 2,
            "crop_size": [32, 48], "pin_memory": False}  # fmt: skip
    if name == "nyud_mt":
        over["num_classes"] = NUM_CLASSES
    if name in ("ade20k", "voc2012"):
        over["val_aug"] = {"short_side": 48, "crop": [48, 48]}
    dm = instantiate(data_cfg(name, tmp_path, **over).data)
    assert isinstance(dm, DenseDataModule)
    dm.prepare_data()
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    val = next(iter(dm.val_dataloader()))
    for t in dm.tasks:
        assert t in train and t in val
    assert train["image"].shape[-2:] == (32, 48)
    if name == "pascal_context_mt":
        assert val["image"].shape[-2:] == (512, 512)  # eval pads to 512x512 (top-left)
    assert val["meta"]["orig_size"][0].tolist() == [48, 48]
    dm.setup("test")
    assert len(dm.test_dataloader().dataset) == len(dm.val_dataloader().dataset)


def test_synthetic_mt_batches_follow_the_contract(tmp_path: Path) -> None:
    cfg = data_cfg("synthetic_mt", tmp_path, **{"synthetic.num_train": 4, "synthetic.num_val": 2,
                                                "synthetic.workers": 0, "num_workers": 0, "batch_size": 2})  # fmt: skip
    dm = instantiate(cfg.data)
    assert str(dm.root).startswith(str(tmp_path / "synthetic"))
    assert dm.tasks == ["seg", "depth", "normals", "edge", "sal"] and dm.num_classes == NUM_CLASSES
    assert dm.max_depth == 10 and dm.class_names[0] == "floor"
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["image"].shape == (2, 3, 128, 160) and b["image"].dtype == torch.float32
    assert b["seg"].dtype == torch.int64 and b["seg"].shape == (2, 128, 160)
    assert set(b["seg"].unique().tolist()) <= set(range(NUM_CLASSES)) | {255}
    assert b["depth"].shape == (2, 1, 128, 160) and 0.5 <= b["depth"][b["depth"] > 0].min() < b["depth"].max() < 10
    n = b["normals"].norm(dim=1)
    assert torch.all(((n - 1).abs() < 1e-3) | (n == 0))
    for t in ("edge", "sal"):
        assert b[t].shape == (2, 1, 128, 160) and set(b[t].unique().tolist()) <= {0.0, 1.0}
    assert b["meta"]["name"][0].startswith("train_") and b["meta"]["orig_size"][0].tolist() == [128, 128]


def test_single_task_synthetic_configs(tmp_path: Path) -> None:
    small = {"synthetic.num_train": 3, "synthetic.num_val": 1, "synthetic.workers": 0, "num_workers": 0}
    seg = instantiate(data_cfg("synthetic", tmp_path, **small).data)
    dep = instantiate(data_cfg("synthetic_depth", tmp_path, **small).data)
    assert seg.root == dep.root  # one cache for all synthetic configs
    seg.setup("validate")
    dep.setup("validate")
    assert set(seg.val_dataset[0]) == {"image", "seg", "meta"}
    assert set(dep.val_dataset[0]) == {"image", "depth", "meta"} and dep.num_classes is None


def test_two_workers_collate(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "d", "nyud_mt", num_train=8, num_val=2, seed=0, height=32, width=32, workers=0)
    dm = DenseDataModule("synthetic", str(root), "nyud_mt", ["seg", "depth"], num_classes=NUM_CLASSES,
                         batch_size=4, num_workers=2, crop_size=[32, 32], train_aug={"hflip": 0.5})  # fmt: skip
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and all(b["seg"].shape == (4, 32, 32) for b in batches)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="layout"):
        DenseDataModule("x", "/tmp", "cityscapes", ["seg"], num_classes=19)
    with pytest.raises(ValueError, match="tasks"):
        DenseDataModule("x", "/tmp", "nyud_mt", ["semseg"], num_classes=40)
    with pytest.raises(ValueError, match="num_classes"):
        DenseDataModule("x", "/tmp", "nyud_mt", ["seg"])
    with pytest.raises(ValueError, match="synthetic scenes have"):
        DenseDataModule("x", "/tmp", "nyud_mt", ["seg"], num_classes=40, synthetic={"num_train": 1})


def test_benchmark_data_measures_throughput(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "d", "nyud_mt", num_train=4, num_val=1, seed=0, height=32, width=32, workers=0)
    dm = DenseDataModule("synthetic", str(root), "nyud_mt", ["seg"], num_classes=NUM_CLASSES, batch_size=2)
    out = measure_throughput(dm, num_batches=3, workers=0)
    assert out["num_batches"] == 3 and out["batch_size"] == 2 and out["samples_per_s"] > 0 and out["workers"] == 0
    cfg = compose_config("train", ["data=synthetic_depth", "data.batch_size=3"], hydra_node=False)
    assert cfg.data.name == "synthetic_depth" and cfg.data.batch_size == 3
