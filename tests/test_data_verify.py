"""data.verify: every bad-file kind is caught before the first training step, all at once, and a passed check
is cached; a bad file met mid-training (verify=none) still raises the loader's own error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_train import TINY

from bindense.data import ADE20KDataset, LabelRangeError, NYUDepthDataset
from bindense.data.synthetic import write_synthetic
from bindense.data.verify import DataVerificationError, verify_dataset
from bindense.lit.pipeline import train
from bindense.utils.compose import compose_config
from bindense.utils.run import ConfigError

ROOT = Path(__file__).resolve().parents[1]
#: training overrides of a tiny run on a generated real-layout dataset
RUN = [o for o in TINY if not o.startswith(("data.synthetic", "paths.data_dir"))]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {layout: write_synthetic(base / layout, layout, 8, 4, 0, 48, 64, 1) for layout in ("ade20k", "bts_nyu")}


def copy(clean: dict[str, Path], layout: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clean[layout], tmp_path / layout))


def break_ade(root: Path) -> dict[str, str]:
    """One file of each kind broken; returns {file: words the report must contain}."""
    img, ann = root / "images" / "training", root / "annotations" / "training"
    jpg = img / "ADE_train_00000001.jpg"
    jpg.write_bytes(jpg.read_bytes()[:-400])  # truncated JPEG
    (img / "ADE_train_00000002.jpg").write_text("not an image\n")  # a text file named .jpg
    small = Image.open(ann / "ADE_train_00000003.png").resize((10, 10), Image.NEAREST)
    small.save(ann / "ADE_train_00000003.png")  # label of the wrong size
    bad = np.array(Image.open(ann / "ADE_train_00000004.png"))
    bad[0, 0] = 200  # label value out of range (150 classes)
    Image.fromarray(bad).save(ann / "ADE_train_00000004.png")
    return {
        str(jpg): "truncated JPEG",
        str(img / "ADE_train_00000002.jpg"): "not an image",
        str(ann / "ADE_train_00000003.png"): "size 10x10",
        str(ann / "ADE_train_00000004.png"): "[200]",
    }


def train_on(root: Path, data: str, tmp_path: Path, mode: str):
    cfg = compose_config(
        "train", [*RUN, f"data={data}", f"data.root={root}", f"data.verify={mode}", "data.verify_cache_dir=null"],
        tmp_path / "run",
    )  # fmt: skip
    return train(cfg)


def test_full_check_reports_every_bad_file_before_training(clean, tmp_path):
    root = copy(clean, "ade20k", tmp_path)
    expected = break_ade(root)
    with pytest.raises(DataVerificationError) as err:
        train_on(root, "ade20k", tmp_path, "full")
    found = {p.file: f"{p.what}; {p.expected}" for p in err.value.problems}
    assert set(found) == set(expected)  # all four at once
    for file, words in expected.items():
        assert words in found[file] and file in str(err.value)
    assert "its image's size 48x64" in found[str(root / "annotations" / "training" / "ADE_train_00000003.png")]
    assert not (tmp_path / "run" / "checkpoints").exists()  # before the first training step


def test_quick_check_reads_headers(clean, tmp_path):
    root = copy(clean, "ade20k", tmp_path)
    expected = break_ade(root)
    ds = ADE20KDataset(root, "training")
    with pytest.raises(DataVerificationError) as err:
        verify_dataset(ds, "quick", workers=2, progress=False)
    # the out-of-range label value needs decoding: only data.verify=full finds it
    out_of_range = str(root / "annotations" / "training" / "ADE_train_00000004.png")
    assert {p.file for p in err.value.problems} == set(expected) - {out_of_range}


def test_eight_bit_depth_png_is_caught_before_training(clean, tmp_path):
    root = copy(clean, "bts_nyu", tmp_path)
    ds = NYUDepthDataset(root, "nyudepthv2_train_files_with_gt.txt")
    depth = Path(ds.records[2]["depth"])
    Image.fromarray((np.array(Image.open(depth)) // 256).astype(np.uint8)).save(depth)
    with pytest.raises(DataVerificationError, match="mode L") as err:
        train_on(root, "nyu_depth", tmp_path, "quick")
    assert [p.file for p in err.value.problems] == [str(depth)]
    assert "16-bit" in err.value.problems[0].expected
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_passed_check_is_cached_and_invalidated_by_a_change(clean, tmp_path):
    root = copy(clean, "ade20k", tmp_path)
    ds = ADE20KDataset(root, "training")
    cache = tmp_path / "cache"
    assert verify_dataset(ds, "full", cache_dir=cache, progress=False)["cached"] is False
    assert verify_dataset(ds, "quick", cache_dir=cache, progress=False)["cached"] is True  # full answers quick
    (root / "images" / "training" / "ADE_train_00000005.jpg").write_text("changed")
    with pytest.raises(DataVerificationError, match="ADE_train_00000005"):
        verify_dataset(ds, "quick", cache_dir=cache, progress=False)


def test_bad_file_mid_training_keeps_its_clear_error(clean, tmp_path):
    root = copy(clean, "ade20k", tmp_path)
    break_ade(root)
    ds = ADE20KDataset(root, "training")
    verify_dataset(ds, "none")  # skipped: nothing raised
    with pytest.raises(LabelRangeError, match=r"ADE_train_00000004\.png' holds values \[200\]"):
        ds.load_raw(3)


def test_unknown_verify_mode_is_refused(tmp_path):
    cfg = compose_config("train", [*TINY, "data.verify=fast"], tmp_path)
    with pytest.raises(ConfigError, match=r"data\.verify='fast': expected one of 'quick', 'full', 'none'"):
        train(cfg)


@pytest.mark.slow
def test_check_data_script(clean, tmp_path):
    root = copy(clean, "ade20k", tmp_path)
    cmd = [sys.executable, "scripts/check_data.py", "data=ade20k", f"data.root={root}", "data.verify_cache_dir=null"]
    ok = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "training" in ok.stdout and "validation" in ok.stdout, ok.stdout + ok.stderr
    break_ade(root)
    bad = subprocess.run([*cmd, "data.verify=full"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "found 4 bad file(s)" in bad.stdout.replace("\n", " ")
