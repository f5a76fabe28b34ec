"""EdgeMetrics against a numpy reference that thresholds first and dilates each binary map."""

import numpy as np
import pytest
import torch

from bindense.metrics import EdgeMetrics, max_filter


def np_dilate(mask: np.ndarray, r: int, footprint: str) -> np.ndarray:
    """Binary dilation of (H, W) by every offset within distance r (disk: Euclidean, square: max-norm)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if footprint == "disk" and dy * dy + dx * dx > r * r:
                continue
            # out[y, x] |= mask[y + dy, x + dx]
            out[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] |= mask[
                max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)
            ]
    return out


def np_ods(preds, gts, thresholds, r, footprint, ignore=None):
    best = (-1.0, None)
    for t in thresholds:
        matched = pos = recalled = gt_pos = 0
        for pred, gt in zip(preds, gts):
            counted = np.ones_like(gt, bool) if ignore is None else gt != ignore
            edge = (gt > 0.5) & counted
            pb = (pred >= t) & counted
            matched += np.sum(pb & np_dilate(edge, r, footprint))
            pos += pb.sum()
            recalled += np.sum(edge & np_dilate(pb, r, footprint))
            gt_pos += edge.sum()
        p = matched / pos if pos else 0.0
        rc = recalled / gt_pos
        f = 2 * p * rc / (p + rc) if p + rc > 0 else 0.0
        if f > best[0]:
            best = (f, t)
    return best


def random_edges(rng, b, h, w):
    gt = np.zeros((b, h, w), np.float32)
    for i in range(b):  # a few lines plus noise
        gt[i, rng.integers(0, h, 3), :] = 1.0
        gt[i, :, rng.integers(0, w, 2)] = 1.0
    gt[rng.random(gt.shape) < 0.02] = 1.0
    near = np.stack([np_dilate(g > 0, 2, "disk") for g in gt])
    pred = np.clip(0.5 * near + 0.6 * rng.random(gt.shape) - 0.1, 0, 1).astype(np.float32)
    return pred, gt


@pytest.mark.parametrize(("footprint", "r"), [("disk", 3), ("square", 2), ("disk", 0)])
def test_random_accumulated(footprint, r):
    rng = np.random.default_rng(0)
    thresholds = [0.05 * k for k in range(1, 20)]
    metric = EdgeMetrics(thresholds=thresholds, tolerance_px=r, footprint=footprint)
    preds, gts = [], []
    for b in (2, 1, 2):
        pred, gt = random_edges(rng, b, 30, 41)
        metric.update(torch.from_numpy(pred)[:, None], torch.from_numpy(gt)[:, None])
        preds += list(pred)
        gts += list(gt)
    out = metric.compute()
    f, t = np_ods(preds, gts, thresholds, r, footprint)
    assert out["odsF_approx"].item() == pytest.approx(f, abs=1e-6)
    assert out["ods_threshold"].item() == pytest.approx(t, abs=1e-6)


def test_logits_ignore_and_default_thresholds():
    rng = np.random.default_rng(1)
    pred, gt = random_edges(rng, 2, 25, 30)
    gt[:, :5] = 255  # ignored band
    metric = EdgeMetrics(tolerance_px=2, from_logits=True, ignore_index=255)
    logits = torch.logit(torch.from_numpy(pred).double().clamp(1e-6, 1 - 1e-6))
    metric.update(logits, torch.from_numpy(gt))
    assert metric.thresholds.numel() == 99
    thresholds = [k / 100 for k in range(1, 100)]
    f, t = np_ods(list(pred), list(gt), thresholds, 2, "disk", ignore=255)
    out = metric.compute()
    assert out["odsF_approx"].item() == pytest.approx(f, abs=1e-6)
    assert out["ods_threshold"].item() == pytest.approx(t, abs=1e-6)


def test_perfect_prediction_and_tolerance():
    gt = torch.zeros(1, 20, 20)
    gt[0, 10, :] = 1.0
    metric = EdgeMetrics()
    metric.update(gt.clone(), gt)
    out = metric.compute()
    assert out["odsF_approx"].item() == pytest.approx(1.0)
    assert out["ods_threshold"].item() == pytest.approx(0.01)
    # an edge shifted by 2 px is perfect with tolerance 2, and worthless with tolerance 1
    shifted = torch.roll(gt, 2, dims=1)
    for r, expected in ((2, 1.0), (1, 0.0)):
        m = EdgeMetrics(tolerance_px=r)
        m.update(shifted, gt)
        assert m.compute()["odsF_approx"].item() == pytest.approx(expected), r


def test_tolerance_from_image_diagonal_and_max_filter():
    assert EdgeMetrics(max_dist=0.011).radius(480, 640) == 9  # NYUD: 0.011 * 800 = 8.8
    assert EdgeMetrics().radius(512, 512) == 5  # PASCAL: 0.0075 * 724 = 5.4
    x = torch.zeros(1, 9, 9)
    x[0, 4, 4] = 1.0
    disk = max_filter(x, 2, "disk")[0].numpy() > 0
    assert disk.sum() == 13 and np.array_equal(disk, np_dilate(x[0].numpy() > 0, 2, "disk"))
    assert (max_filter(x, 2, "square")[0] > 0).sum().item() == 25
