"""Synthetic scenes: determinism, geometric consistency of the targets, writers, cache, CLI."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bindense.data import NYUDMTDataset, ensure_synthetic, generate_sample, write_synthetic
from bindense.data.formats import FORMATS
from bindense.data.prepare_nyud import normals_from_depth
from bindense.data.scene import CLASS_NAMES, FLOOR, NUM_CLASSES, SALIENT_MIN_CLASS
from bindense.data.synthetic import MARKER

REPO = Path(__file__).resolve().parents[1]
H, W = 64, 80


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    return [generate_sample(7, "train", i, H, W) for i in range(24)]


def test_deterministic_from_seed() -> None:
    a, b = generate_sample(1, "train", 5, H, W), generate_sample(1, "train", 5, H, W)
    for k in ("image", "seg", "depth", "normals", "edge", "sal"):
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(a["image"], generate_sample(1, "train", 6, H, W)["image"])
    assert not np.array_equal(a["image"], generate_sample(2, "train", 5, H, W)["image"])
    assert not np.array_equal(a["image"], generate_sample(1, "val", 5, H, W)["image"])


def test_targets_are_consistent(samples: list[dict]) -> None:
    seen = set()
    for s in samples:
        assert s["image"].shape == (H, W, 3) and s["image"].dtype == np.uint8
        assert s["seg"].max() < NUM_CLASSES
        assert 0.5 <= s["depth"].min() and s["depth"].max() < 10.0
        assert np.allclose(np.linalg.norm(s["normals"], axis=-1), 1.0, atol=1e-4)
        # every semantic boundary is an edge; saliency = the objects
        seg = s["seg"]
        sem = np.zeros_like(seg, bool)
        sem[:, :-1] |= seg[:, :-1] != seg[:, 1:]
        sem[:-1] |= seg[:-1] != seg[1:]
        assert np.all(s["edge"][sem] == 1)
        assert np.array_equal(s["sal"] > 0, seg >= SALIENT_MIN_CLASS)
        # floor normals point up; floor depth grows towards the horizon
        floor = seg == FLOOR
        assert np.median(s["normals"][floor][:, 1]) > 0.9
        col = W // 2
        rows = np.flatnonzero(floor[:, col])
        if len(rows) > 4:
            assert s["depth"][rows[0], col] > s["depth"][rows[-1], col]
        seen |= set(np.unique(seg).tolist())
    assert len(seen) >= NUM_CLASSES - 1  # (almost) every class appears in a couple of dozen scenes
    assert 0.1 < np.mean([s["sal"].mean() for s in samples]) < 0.6


def test_normals_agree_with_depth(samples: list[dict]) -> None:
    """Normals derived from the rendered depth (prepare_nyud.normals_from_depth) match the rendered normals."""
    from scipy.ndimage import binary_erosion

    s = samples[0]
    f = s["focal"]  # fx = fy at the rendered size; normals_from_depth takes intrinsics at 640x480
    derived = normals_from_depth(s["depth"], (f * 640 / W, f * 480 / H, 320.0, 240.0))
    interior = binary_erosion(s["edge"] == 0, iterations=3, border_value=0)
    cos = (derived * s["normals"]).sum(-1)[interior]
    assert np.median(cos) > np.cos(np.radians(5))


@pytest.mark.parametrize("layout", sorted(FORMATS))
def test_every_layout_is_written(layout: str, tmp_path: Path) -> None:
    out = write_synthetic(tmp_path / layout, layout, num_train=3, num_val=2, seed=0, height=24, width=32, workers=0)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 6


def test_workers_do_not_change_the_data(tmp_path: Path) -> None:
    a = write_synthetic(tmp_path / "a", "nyud_mt", num_train=10, num_val=2, seed=4, height=24, width=32, workers=0)
    b = write_synthetic(tmp_path / "b", "nyud_mt", num_train=10, num_val=2, seed=4, height=24, width=32, workers=2)
    for name in ("train_00009", "val_00001"):
        assert np.array_equal(np.load(a / "depth" / f"{name}.npy"), np.load(b / "depth" / f"{name}.npy"))
    assert (a / "gt_sets/train.txt").read_text() == (b / "gt_sets/train.txt").read_text()


def test_cache_is_reused_and_regenerated_when_params_change(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    params = dict(num_train=2, num_val=1, seed=0, height=16, width=16, workers=0)
    ensure_synthetic(root, "nyud_mt", **params)
    marker = json.loads((root / MARKER).read_text())
    assert marker["num_train"] == 2 and "workers" not in marker
    stamp = (root / "images" / "train_00000.jpg").stat().st_mtime_ns
    ensure_synthetic(root, "nyud_mt", **params)
    assert (root / "images" / "train_00000.jpg").stat().st_mtime_ns == stamp
    ensure_synthetic(root, "nyud_mt", **{**params, "num_train": 3})
    assert len(NYUDMTDataset(root, "train", tasks=("seg",), num_classes=NUM_CLASSES)) == 3
    assert not list(tmp_path.glob(".cache.*"))  # no temporary directories left


def test_make_synthetic_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mod = _script("make_synthetic")
    assert mod.main(["--layout", "bts", "--out", str(tmp_path / "nyu"), "--num", "4", "--seed", "1",
                     "--height", "24", "--width", "32", "--workers", "0"]) == 0  # fmt: skip
    assert "4 + 1 synthetic scenes" in capsys.readouterr().out
    lines = (tmp_path / "nyu" / "nyudepthv2_train_files_with_gt.txt").read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("/room_0000/rgb_00000.jpg /room_0000/sync_depth_00000.png")


def test_class_names() -> None:
    assert len(CLASS_NAMES) == NUM_CLASSES == 13 and CLASS_NAMES[FLOOR] == "floor"
