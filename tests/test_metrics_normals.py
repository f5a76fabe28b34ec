"""NormalsMetrics against a numpy arccos reference over all valid pixels."""

import numpy as np
import pytest
import torch

from bindense.metrics import NormalsMetrics


def np_angles(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) -> angles in degrees at pixels whose ground truth is not the zero vector."""
    p = np.moveaxis(pred, 1, -1).reshape(-1, 3).astype(np.float64)
    g = np.moveaxis(gt, 1, -1).reshape(-1, 3).astype(np.float64)
    valid = np.linalg.norm(g, axis=1) > 0
    p, g = p[valid], g[valid]
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip(np.sum(p * g, axis=1), -1, 1)))


def random_normals(rng, b, h, w, noise):
    gt = rng.normal(size=(b, 3, h, w))
    gt /= np.linalg.norm(gt, axis=1, keepdims=True)
    pred = (gt + rng.normal(scale=noise, size=gt.shape)) * rng.uniform(0.5, 2.0, size=(b, 1, h, w))
    gt[:, :, rng.random((h, w)) < 0.1] = 0.0  # missing normals
    return pred.astype(np.float32), gt.astype(np.float32)


def test_random_accumulated():
    rng = np.random.default_rng(0)
    metric = NormalsMetrics()
    angles = []
    for b, noise in ((2, 0.3), (1, 1.0), (3, 0.1)):
        pred, gt = random_normals(rng, b, 15, 21, noise)
        metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
        angles.append(np_angles(pred, gt))
    a = np.concatenate(angles)
    out = metric.compute()
    assert out["mean_angle"].item() == pytest.approx(a.mean(), rel=1e-5)
    assert out["rmse_angle"].item() == pytest.approx(np.sqrt(np.mean(a**2)), rel=1e-5)
    assert abs(out["median_angle"].item() - np.median(a)) <= 0.0051  # histogram: half a 0.01 deg bin
    for key, t in (("within_11_25", 11.25), ("within_22_5", 22.5), ("within_30", 30.0)):
        assert out[key].item() == pytest.approx(np.mean(a < t), abs=1e-7), key
    assert metric.num_pixels.item() == a.size


def test_perfect_and_hand_computed():
    rng = np.random.default_rng(1)
    gt = torch.from_numpy(random_normals(rng, 2, 8, 9, 0.0)[1])
    metric = NormalsMetrics()
    metric.update(3.0 * gt, gt)  # scale does not matter (float32 rounding of 3*gt: ~1e-6 deg)
    out = metric.compute()
    for k in ("mean_angle", "median_angle", "rmse_angle"):
        assert out[k].item() == pytest.approx(0.0, abs=1e-5), k
    assert out["within_11_25"].item() == 1.0

    pred = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 1, 3).clone()
    # gt per pixel (channels x, y, z): (1, 1, 0) -> 45 deg, (0, 1, 0) -> 90 deg, (2, 0, 0) -> 0 deg
    gt = torch.tensor([[[[1.0, 0.0, 2.0]], [[1.0, 1.0, 0.0]], [[0.0, 0.0, 0.0]]]])
    metric = NormalsMetrics()
    metric.update(pred, gt)
    out = metric.compute()
    assert out["mean_angle"].item() == pytest.approx(45.0, abs=1e-5)
    assert out["median_angle"].item() == pytest.approx(45.0, abs=0.006)
    assert out["within_30"].item() == pytest.approx(1 / 3)


def test_bad_shape():
    with pytest.raises(ValueError):
        NormalsMetrics().update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
