"""scripts/prepare_nyud_mt.py on a small labelled-NYUv2 .mat written with h5py (MATLAB's transposed axes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from bindense.data import NYUDMTDataset
from bindense.data.prepare_nyud import normals_from_depth

REPO = Path(__file__).resolve().parents[1]
N, H, W = 5, 24, 32


def _script():
    spec = importlib.util.spec_from_file_location("prepare_nyud_mt", REPO / "scripts" / "prepare_nyud_mt.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["prepare_nyud_mt"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def official(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    images = np.zeros((N, H, W, 3), np.uint8)
    images[..., 0] = (xx * 255 // (W - 1))[None]  # red grows to the right, green downwards
    images[..., 1] = (yy * 255 // (H - 1))[None]
    depths = (1.0 + 0.1 * yy[None] + rng.random((N, 1, 1))).astype(np.float32)
    labels = np.zeros((N, H, W), np.uint16)
    labels[:, :, W // 2 :] = 894
    labels[:, H // 2 :, : W // 2] = 3
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(mat, "w") as f:  # MATLAB (H, W, 3, N) column-major -> h5py (N, 3, W, H)
        f["images"] = images.transpose(0, 3, 2, 1)
        f["depths"] = depths.transpose(0, 2, 1)
        f["labels"] = labels.transpose(0, 2, 1)
    splits = tmp_path / "splits.mat"
    savemat(splits, {"trainNdxs": np.array([[1], [2], [4]]), "testNdxs": np.array([[3], [5]])})
    cmap = tmp_path / "classMapping40.npy"
    mapping = np.arange(894) % 40 + 1  # raw class c -> mapping[c - 1]
    np.save(cmap, mapping)
    return {"mat": mat, "splits": splits, "cmap": cmap, "images": images, "depths": depths, "labels": labels,
            "mapping": mapping}  # fmt: skip


def test_prepare_nyud_mt_converts_the_labelled_mat(official: dict, tmp_path: Path) -> None:
    out = tmp_path / "NYUD_MT"
    rc = _script().main(["--mat", str(official["mat"]), "--splits", str(official["splits"]),
                         "--class-map", str(official["cmap"]), "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert (out / "gt_sets/train.txt").read_text().split() == ["0000", "0001", "0003"]
    assert (out / "gt_sets/val.txt").read_text().split() == ["0002", "0004"]
    ds = NYUDMTDataset(out, "val", tasks=("seg", "depth", "normals", "edge"))
    s = ds[1]  # sample index 4 of the .mat
    assert s["meta"] == {"name": "0004", "orig_size": (H, W)}
    assert torch.allclose(s["depth"][0], torch.from_numpy(official["depths"][4]))
    m = official["mapping"]
    # raw 0 -> 0 (unlabelled) -> ignore; raw 3 -> m[2] = 3 -> class 2; raw 894 -> m[893] -> m[893] - 1
    assert s["seg"][0, 0] == 255 and s["seg"][-1, 0] == m[2] - 1 and s["seg"][0, -1] == m[893] - 1
    raw_img = np.asarray(Image.open(out / "images/0004.jpg"))
    assert np.abs(raw_img.astype(int) - official["images"][4].astype(int)).mean() < 4  # orientation kept (JPEG)
    assert s["edge"][0, :, W // 2 - 1].sum() > 0 and s["edge"][0, H // 2 - 1, : W // 2].sum() > 0
    n = s["normals"].norm(dim=0)
    assert torch.all(((n - 1).abs() < 1e-4) | (n == 0))


def test_normals_from_depth_of_a_tilted_floor() -> None:
    """A floor seen by a level camera: depth grows towards the horizon, normal = up (0, 1, 0)."""
    h, w = 48, 64
    fx, fy, cy = 50.0, 50.0, h / 2
    v = np.arange(h, dtype=np.float64)[:, None] + 0.5
    with np.errstate(divide="ignore"):
        depth = np.where(v > cy + 2, 1.5 * fy / (v - cy), 0.0) * np.ones((1, w))  # camera 1.5 m above the floor
    n = normals_from_depth(depth.astype(np.float32), (fx * 640 / w, fy * 480 / h, 320.0, 240.0))
    rows = slice(int(cy) + 8, h - 3)
    assert np.allclose(n[rows, 3:-3], [0.0, 1.0, 0.0], atol=0.05)
    assert (n[: int(cy)] == 0).all()


def test_prepare_rejects_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _script().main(["--mat", str(tmp_path / "x.mat"), "--splits", "s", "--class-map", "c", "--out", "o"])
