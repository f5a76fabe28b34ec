"""Augmentation consistency: every target follows the image; labels stay labels, depth stays metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bindense.data.transforms import IMAGENET_MEAN, IMAGENET_STD, DensePipeline, border_crop_box, kb_crop_box

H, W = 40, 56


def _sample(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 5, (H, W)).astype(np.uint8)
    seg[:3] = 255
    normals = rng.normal(size=(H, W, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return {
        "image": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        "seg": seg,
        "parts": rng.integers(0, 7, (H, W)).astype(np.uint8),
        "depth": rng.choice([0.0, 1.25, 2.5, 7.75], size=(H, W)).astype(np.float32),
        "normals": normals,
        "edge": (rng.random((H, W)) < 0.1).astype(np.float32),
        "sal": (rng.random((H, W)) < 0.5).astype(np.float32),
        "meta": {"name": "x", "orig_size": (H, W)},
    }


def _unnormalize(img: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((img * std + mean) * 255).round().permute(1, 2, 0).numpy()


def test_no_aug_is_exact_conversion() -> None:
    s = _sample()
    out = DensePipeline(None)(s)
    assert np.allclose(_unnormalize(out["image"]), s["image"], atol=0.01)
    assert out["seg"].dtype == torch.int64 and torch.equal(out["seg"], torch.from_numpy(s["seg"]).long())
    assert torch.equal(out["depth"][0], torch.from_numpy(s["depth"]))
    assert torch.equal(out["normals"], torch.from_numpy(s["normals"]).permute(2, 0, 1))
    assert out["meta"] == s["meta"]


def test_hflip_flips_every_target_and_negates_normal_x() -> None:
    s = _sample()
    out = DensePipeline({"hflip": 1.0}, train=True)(s)
    assert np.allclose(_unnormalize(out["image"]), s["image"][:, ::-1], atol=0.01)
    assert torch.equal(out["seg"], torch.from_numpy(s["seg"][:, ::-1].copy()).long())
    assert torch.equal(out["parts"], torch.from_numpy(s["parts"][:, ::-1].copy()).long())
    assert torch.equal(out["depth"][0], torch.from_numpy(s["depth"][:, ::-1].copy()))
    n = s["normals"][:, ::-1]
    assert torch.allclose(out["normals"][0], -torch.from_numpy(n[..., 0].copy()))
    assert torch.allclose(out["normals"][1:], torch.from_numpy(n[..., 1:].copy()).permute(2, 0, 1))


def test_rotation_rotates_normals_with_the_image() -> None:
    """A bright dot right of the centre, normals everywhere pointing right (towards it): after a 90 deg
    rotation the dot is above or below the centre and the normals must point at it."""
    image = np.zeros((41, 41, 3), np.uint8)
    image[20, 32] = 255
    normals = np.zeros((41, 41, 3), np.float32)
    normals[..., 0] = 1.0
    pipe = DensePipeline({"rotate": 90.0}, train=True)
    checked = 0
    for seed in range(40):
        torch.manual_seed(seed)
        pipe._seed = None
        out = pipe({"image": image, "normals": normals})
        img = _unnormalize(out["image"])[..., 0]
        y, x = np.unravel_index(np.argmax(img), img.shape)
        n = out["normals"][:, 20, 20].numpy()
        to_dot = np.array([x - 20.0, -(y - 20.0)])  # y up
        to_dot /= np.linalg.norm(to_dot)
        assert abs(np.linalg.norm(n[:2]) - 1) < 1e-5 and n[2] == 0
        assert float(n[:2] @ to_dot) > 0.99
        checked += 1
    assert checked == 40


def test_geometric_aug_keeps_label_sets_and_metric_depth() -> None:
    s = _sample()
    aug = {
        "scale": [0.5, 2.0],
        "rotate": 15.0,
        "hflip": 0.5,
        "crop": [32, 48],
        "photometric": {"p": 1.0, "brightness": 0.3},
    }
    pipe = DensePipeline(aug, train=True)
    for seed in range(5):
        torch.manual_seed(seed)
        out = pipe(s)
        assert out["image"].shape == (3, 32, 48) and out["seg"].shape == (32, 48)
        assert set(out["seg"].unique().tolist()) <= set(range(5)) | {255}
        assert set(out["parts"].unique().tolist()) <= set(range(7)) | {255}
        assert set(out["depth"].unique().tolist()) <= {0.0, 1.25, 2.5, 7.75}  # nearest: values unchanged
        assert set(out["edge"].unique().tolist()) <= {0.0, 1.0} and set(out["sal"].unique().tolist()) <= {0.0, 1.0}
        norms = out["normals"].norm(dim=0)
        assert torch.all(((norms - 1).abs() < 1e-4) | (norms == 0))


def test_padding_marks_labels_ignored_and_depth_invalid() -> None:
    s = _sample()
    s["seg"][:] = 1
    s["depth"][:] = 3.0
    out = DensePipeline({"pad_to": [48, 64]})(s)
    assert out["seg"].shape == (48, 64)
    assert (out["seg"][:H, :W] == 1).all() and (out["seg"][H:] == 255).all() and (out["seg"][:, W:] == 255).all()
    assert (out["depth"][0, :H, :W] == 3.0).all() and (out["depth"][0, H:] == 0).all()
    assert (out["normals"][:, H:] == 0).all()


def test_eval_resize_and_centre_crop() -> None:
    s = _sample()
    out = DensePipeline({"short_side": 48, "crop": [48, 48]})(s)
    assert out["image"].shape == (3, 48, 48) and out["seg"].shape == (48, 48)
    assert set(out["seg"].unique().tolist()) <= set(range(5)) | {255}


def test_fixed_crops() -> None:
    assert kb_crop_box(375, 1242, (352, 1216)) == (23, 375, 13, 1229)
    assert kb_crop_box(100, 200, (352, 1216)) == (0, 100, 0, 200)  # smaller than the crop: whole image
    assert border_crop_box(480, 640, (45, 472, 43, 608), (480, 640)) == (45, 472, 43, 608)
    assert border_crop_box(240, 320, (45, 472, 43, 608), (480, 640)) == (22, 236, 22, 304)
    s = _sample()
    out = DensePipeline({"kb_crop": [20, 30]})(s)
    assert torch.equal(out["seg"], torch.from_numpy(s["seg"][20:, 13:43].copy()).long())


def test_workers_draw_different_augmentations() -> None:
    pipe = DensePipeline({"scale": [0.5, 2.0], "crop": [16, 16]}, train=True)
    s = _sample()
    torch.manual_seed(1)
    a = pipe(s)["depth"]
    torch.manual_seed(2)
    b = pipe(s)["depth"]
    torch.manual_seed(1)
    pipe._seed = None
    c = pipe(s)["depth"]
    assert not torch.equal(a, b) and torch.equal(a, c)


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown augmentation keys"):
        DensePipeline({"flip": 0.5})
    with pytest.raises(ValueError, match="unknown photometric keys"):
        DensePipeline({"photometric": {"bright": 0.1}}, train=True)
