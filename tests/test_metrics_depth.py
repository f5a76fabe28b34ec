"""DepthMetrics (per-image Eigen protocol) and PooledDepthRMSE against numpy references."""

import numpy as np
import pytest
import torch

from bindense.metrics import DEPTH_KEYS, DepthMetrics, PooledDepthRMSE, crop_mask


def np_crop(h: int, w: int, crop: str | None) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    if crop is None:
        mask[:] = True
    elif crop == "eigen":
        assert (h, w) == (480, 640)
        mask[45:471, 41:601] = True
    else:  # monodepth / BTS code
        c = np.array([0.40810811 * h, 0.99189189 * h, 0.03594771 * w, 0.96405229 * w]).astype(np.int32)
        mask[c[0] : c[1], c[2] : c[3]] = True
    return mask


def np_image_errors(gt: np.ndarray, pred: np.ndarray) -> dict:
    thresh = np.maximum(gt / pred, pred / gt)
    err = np.log(pred) - np.log(gt)
    return {
        "d1": (thresh < 1.25).mean(),
        "d2": (thresh < 1.25**2).mean(),
        "d3": (thresh < 1.25**3).mean(),
        "abs_rel": np.mean(np.abs(gt - pred) / gt),
        "sq_rel": np.mean((gt - pred) ** 2 / gt),
        "rmse": np.sqrt(np.mean((gt - pred) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2)),
        "log10": np.mean(np.abs(np.log10(gt) - np.log10(pred))),
        "silog": np.sqrt(np.mean(err**2) - np.mean(err) ** 2) * 100,
    }


def np_valid(pred, gt, lo, hi, crop):
    pred = np.clip(pred, lo, hi)
    valid = (gt > lo) & (gt < hi) & np_crop(*gt.shape, crop)
    return pred[valid], gt[valid]


def np_eigen(preds, gts, lo, hi, crop) -> dict:
    rows = []
    for pred, gt in zip(preds, gts):
        p, g = np_valid(pred, gt, lo, hi, crop)
        if g.size:
            rows.append(np_image_errors(g, p))
    return {k: np.mean([r[k] for r in rows]) for k in DEPTH_KEYS}


def random_depth(rng, b, h, w, hi):
    gt = rng.uniform(0.3, hi * 1.2, size=(b, h, w))
    gt[rng.random(gt.shape) < 0.2] = 0.0  # missing
    gt[rng.random(gt.shape) < 0.02] = 1e-4  # below min_depth
    pred = gt * rng.uniform(0.6, 1.5, size=gt.shape) + rng.normal(0, 0.1, size=gt.shape)
    pred[rng.random(gt.shape) < 0.05] = -1.0  # clamped up to min_depth
    pred[rng.random(gt.shape) < 0.05] = 100.0  # clamped down to max_depth
    return pred.astype(np.float32), gt.astype(np.float32)


@pytest.mark.parametrize(("crop", "size", "hi"), [(None, (24, 32), 10.0), ("garg", (60, 200), 80.0)])
def test_eigen_protocol_random(crop, size, hi):
    rng = np.random.default_rng(0)
    metric = DepthMetrics(min_depth=1e-3, max_depth=hi, crop=crop)
    preds, gts = [], []
    for _ in range(3):
        pred, gt = random_depth(rng, 2, *size, hi)
        metric.update(torch.from_numpy(pred)[:, None], torch.from_numpy(gt)[:, None])
        preds += list(pred)
        gts += list(gt)
    empty = np.zeros((1, *size), np.float32)  # an image without valid pixel: skipped
    metric.update(torch.from_numpy(empty + 1.0), torch.from_numpy(empty))
    out = metric.compute()
    ref = np_eigen(preds, gts, 1e-3, hi, crop)
    assert set(out) == set(DEPTH_KEYS)
    for k in DEPTH_KEYS:
        assert out[k].item() == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k
    assert metric.count.item() == 6 and metric.num_skipped.item() == 1


def test_eigen_crop_full_size():
    rng = np.random.default_rng(1)
    pred, gt = random_depth(rng, 2, 480, 640, 10.0)
    metric = DepthMetrics(max_depth=10.0, crop="eigen")
    metric.update(torch.from_numpy(pred), torch.from_numpy(gt))  # (B, H, W) accepted too
    ref = np_eigen(list(pred), list(gt), 1e-3, 10.0, "eigen")
    out = metric.compute()
    for k in DEPTH_KEYS:
        assert out[k].item() == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k


def test_crop_masks():
    m = crop_mask(480, 640, "eigen")
    assert m.sum().item() == (471 - 45) * (601 - 41) and m[45, 41] and not m[44, 41] and not m[45, 601]
    half = crop_mask(240, 320, "eigen")  # scaled proportionally, floor division
    rows, cols = half.any(1).nonzero().flatten(), half.any(0).nonzero().flatten()
    assert (rows[0].item(), rows[-1].item() + 1, cols[0].item(), cols[-1].item() + 1) == (22, 235, 20, 300)
    assert np.array_equal(crop_mask(352, 1216, "garg").numpy(), np_crop(352, 1216, "garg"))
    assert crop_mask(5, 7, None).all()
    with pytest.raises(ValueError):
        crop_mask(5, 7, "kb")


def test_perfect_prediction():
    gt = torch.rand(2, 1, 20, 30) * 9 + 0.5
    metric = DepthMetrics(max_depth=10.0)
    metric.update(gt.clone(), gt)
    out = metric.compute()
    assert out["d1"].item() == 1.0 and out["d3"].item() == 1.0
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert out[k].item() == pytest.approx(0.0, abs=1e-6), k
    pooled = PooledDepthRMSE(max_depth=10.0)
    pooled.update(gt.clone(), gt)
    assert pooled.compute()["rmse_pooled"].item() == pytest.approx(0.0, abs=1e-7)


def test_pooled_rmse_random():
    rng = np.random.default_rng(2)
    metric = PooledDepthRMSE(min_depth=1e-3, max_depth=10.0)
    cropped = PooledDepthRMSE(max_depth=10.0, crop="garg")
    ps, gs, pc, gc = [], [], [], []
    for b in (1, 3, 2):  # images of unequal valid counts: pooled != mean of per-image RMSEs
        pred, gt = random_depth(rng, b, 24, 32, 10.0)
        gt[0, :12] = 0.0
        metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
        cropped.update(torch.from_numpy(pred), torch.from_numpy(gt))
        for p, g in zip(pred, gt):
            vp, vg = np_valid(p, g, 1e-3, 10.0, None)
            ps.append(vp), gs.append(vg)
            vp, vg = np_valid(p, g, 1e-3, 10.0, "garg")
            pc.append(vp), gc.append(vg)
    p, g = np.concatenate(ps), np.concatenate(gs)
    out = metric.compute()
    assert set(out) == {"rmse_pooled", "abs_rel_pooled"}
    assert out["rmse_pooled"].item() == pytest.approx(np.sqrt(np.mean((p - g) ** 2)), rel=1e-5)
    assert out["abs_rel_pooled"].item() == pytest.approx(np.mean(np.abs(p - g) / g), rel=1e-5)
    p, g = np.concatenate(pc), np.concatenate(gc)
    assert cropped.compute()["rmse_pooled"].item() == pytest.approx(np.sqrt(np.mean((p - g) ** 2)), rel=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError):
        DepthMetrics(crop="kb")
    with pytest.raises(ValueError):
        DepthMetrics(min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError):
        DepthMetrics().update(torch.ones(1, 4, 4), torch.ones(1, 4, 5))
