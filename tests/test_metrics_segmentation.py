"""SegmentationMetrics against a plain numpy confusion-free reference."""

import numpy as np
import pytest
import torch

from bindense.metrics import SegmentationMetrics


def np_seg(preds: list[np.ndarray], targets: list[np.ndarray], c: int, ignore: int) -> dict:
    """Reference: pixel-wise counts over the whole set (labels; out-of-range targets ignored)."""
    p = np.concatenate([x.ravel() for x in preds])
    t = np.concatenate([x.ravel() for x in targets])
    valid = (t != ignore) & (t >= 0) & (t < c)
    p, t = p[valid], t[valid]
    ious = []
    for k in range(c):
        union = np.sum((p == k) | (t == k))
        if union > 0:
            ious.append(np.sum((p == k) & (t == k)) / union)
    return {"pixAcc": np.mean(p == t), "mIoU": np.mean(ious), "n_classes": len(ious)}


def random_batch(rng: np.random.Generator, b: int, c: int, h: int, w: int):
    logits = rng.normal(size=(b, c, h, w)).astype(np.float32)
    logits[:, c - 1] -= 100.0  # last class never predicted ...
    target = rng.integers(0, c - 1, size=(b, h, w))  # ... and never in the ground truth
    target[rng.random((b, h, w)) < 0.1] = 255
    target[rng.random((b, h, w)) < 0.02] = c + 3  # out of range, not the ignore label: ignored too
    # make the prediction better than chance so IoUs are spread
    hit = rng.random((b, h, w)) < 0.5
    logits_t = np.take_along_axis(logits, np.clip(target, 0, c - 1)[:, None], 1)
    np.put_along_axis(logits, np.clip(target, 0, c - 1)[:, None], np.where(hit[:, None], 50.0, logits_t), 1)
    return logits, target


def test_logits_accumulated_over_updates():
    rng = np.random.default_rng(0)
    c = 6
    metric = SegmentationMetrics(num_classes=c, ignore_index=255)
    preds, targets = [], []
    for _ in range(3):
        logits, target = random_batch(rng, 2, c, 17, 23)
        metric.update(torch.from_numpy(logits), torch.from_numpy(target))
        preds.append(logits.argmax(1))
        targets.append(target)
    out = metric.compute()
    ref = np_seg(preds, targets, c, 255)
    assert ref["n_classes"] == c - 1  # the absent class is excluded from the mean
    assert out["pixAcc"].item() == pytest.approx(ref["pixAcc"], abs=1e-6)
    assert out["mIoU"].item() == pytest.approx(ref["mIoU"], abs=1e-6)
    assert set(out) == {"pixAcc", "mIoU"}
    iou = metric.per_class_iou()
    assert torch.isnan(iou[c - 1]) and not torch.isnan(iou[: c - 1]).any()


def test_label_predictions_with_out_of_range_values_and_channel_dim():
    rng = np.random.default_rng(1)
    c = 4
    metric = SegmentationMetrics(num_classes=c, ignore_index=255)
    preds, targets = [], []
    for _ in range(2):
        pred = rng.integers(-1, c + 1, size=(3, 9, 11))  # -1 and c are wrong for every class
        target = rng.integers(0, c, size=(3, 9, 11))
        target[rng.random(target.shape) < 0.2] = 255
        metric.update(torch.from_numpy(pred)[:, None], torch.from_numpy(target)[:, None])
        preds.append(pred)
        targets.append(target)
    out = metric.compute()
    ref = np_seg(preds, targets, c, 255)
    assert out["pixAcc"].item() == pytest.approx(ref["pixAcc"], abs=1e-6)
    assert out["mIoU"].item() == pytest.approx(ref["mIoU"], abs=1e-6)


def test_perfect_and_hand_computed():
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    perfect = SegmentationMetrics(num_classes=3)
    perfect.update(target.clamp(max=2), target)
    assert perfect.compute()["mIoU"].item() == 1.0
    assert perfect.compute()["pixAcc"].item() == 1.0

    metric = SegmentationMetrics(num_classes=3)
    metric.update(torch.tensor([[[0, 1, 1, 1], [2, 0, 0, 0]]]), target)
    # class 0: inter 1, union 3; class 1: inter 2, union 3; class 2: inter 1, union 2
    out = metric.compute()
    assert out["pixAcc"].item() == pytest.approx(4 / 6)
    assert out["mIoU"].item() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_no_ignore_index_and_bad_shapes():
    metric = SegmentationMetrics(num_classes=2, ignore_index=None)
    metric.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]]))
    assert metric.compute()["pixAcc"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        metric.update(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError):
        metric.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 5, 4, dtype=torch.long))
