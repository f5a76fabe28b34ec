"""SaliencyMetrics (pooled maxF with beta^2 = 0.3, MAE) against numpy."""

import numpy as np
import pytest
import torch

from bindense.metrics import SaliencyMetrics


def np_sal(preds, gts, thresholds, beta2):
    p = np.concatenate([x.ravel() for x in preds]).astype(np.float64)
    g = np.concatenate([x.ravel() for x in gts]).astype(np.float64)
    fg = g > 0.5
    fs = []
    for t in thresholds:
        pb = p >= t
        tp = np.sum(pb & fg)
        prec = tp / pb.sum() if pb.sum() else 0.0
        rec = tp / fg.sum()
        fs.append((1 + beta2) * prec * rec / (beta2 * prec + rec) if prec + rec > 0 else 0.0)
    k = int(np.argmax(fs))
    return fs[k], thresholds[k], np.mean(np.abs(p - g))


def random_saliency(rng, b, h, w):
    gt = np.zeros((b, h, w), np.float32)
    gt[:, h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 1.0
    gt[rng.random(gt.shape) < 0.05] = 1.0
    pred = np.clip(0.6 * gt + 0.5 * rng.random(gt.shape), 0, 1).astype(np.float32)
    return pred, gt


@pytest.mark.parametrize("beta2", [0.3, 1.0])
def test_random_accumulated(beta2):
    rng = np.random.default_rng(0)
    metric = SaliencyMetrics(thresholds=49, beta2=beta2)
    thresholds = [k / 50 for k in range(1, 50)]
    preds, gts = [], []
    for b in (2, 3, 1):
        pred, gt = random_saliency(rng, b, 20, 24)
        metric.update(torch.from_numpy(pred)[:, None], torch.from_numpy(gt)[:, None])
        preds.append(pred)
        gts.append(gt)
    f, t, mae = np_sal(preds, gts, thresholds, beta2)
    out = metric.compute()
    assert out["maxF"].item() == pytest.approx(f, abs=1e-6)
    assert out["maxF_threshold"].item() == pytest.approx(t, abs=1e-6)
    assert out["mae"].item() == pytest.approx(mae, abs=1e-6)


def test_logits_and_threshold_list():
    rng = np.random.default_rng(1)
    pred, gt = random_saliency(rng, 2, 16, 16)
    thresholds = [0.7, 0.3, 0.5]  # order does not matter
    metric = SaliencyMetrics(thresholds=thresholds, from_logits=True)
    metric.update(torch.logit(torch.from_numpy(pred).double().clamp(1e-7, 1 - 1e-7)), torch.from_numpy(gt))
    f, t, _ = np_sal([pred], [gt], sorted(thresholds), 0.3)
    out = metric.compute()
    assert out["maxF"].item() == pytest.approx(f, abs=1e-6)
    assert out["maxF_threshold"].item() == pytest.approx(t, abs=1e-6)


def test_ignore_index():
    rng = np.random.default_rng(2)
    pred, gt = random_saliency(rng, 2, 16, 18)
    gt_ignored = gt.copy()
    gt_ignored[:, :4] = 255
    metric = SaliencyMetrics(thresholds=19, ignore_index=255)
    metric.update(torch.from_numpy(pred), torch.from_numpy(gt_ignored))
    f, t, mae = np_sal([pred[:, 4:]], [gt[:, 4:]], [k / 20 for k in range(1, 20)], 0.3)
    out = metric.compute()
    assert out["maxF"].item() == pytest.approx(f, abs=1e-6)
    assert out["maxF_threshold"].item() == pytest.approx(t, abs=1e-6)
    assert out["mae"].item() == pytest.approx(mae, abs=1e-6)


def test_perfect_prediction():
    gt = (torch.rand(2, 1, 10, 12) > 0.7).float()
    metric = SaliencyMetrics()
    metric.update(gt.clone(), gt)
    out = metric.compute()
    assert out["maxF"].item() == pytest.approx(1.0)
    assert out["mae"].item() == 0.0
