"""delta_m by hand, directions of metric keys, the task factory, and DDP-style state merging."""

import pytest
import torch

from bindense.metrics import (
    MTL_METRIC,
    DepthMetrics,
    EdgeMetrics,
    MultiTaskDelta,
    NormalsMetrics,
    PooledDepthRMSE,
    SaliencyMetrics,
    SegmentationMetrics,
    delta_m,
    main_metric,
    metric_direction,
    task_metrics,
)
from bindense.tasks import get_task, metric_directions, task_names

METRICS = {"seg/mIoU": 0.44, "depth/rmse_pooled": 0.5, "normals/mean_angle": 20.0}
BASELINES = {"seg/mIoU": 0.40, "depth/rmse_pooled": 0.625, "normals/mean_angle": 20.0}


def test_delta_m_hand_example():
    # seg: +(0.44 - 0.40) / 0.40 = +10 %; depth: -(0.5 - 0.625) / 0.625 = +20 %; normals: 0 %
    assert delta_m(METRICS, BASELINES) == pytest.approx(10.0)
    assert delta_m(METRICS, BASELINES, {"rmse_pooled", "mean_angle"}) == pytest.approx(10.0)
    assert delta_m(METRICS, BASELINES, {"depth/rmse_pooled": True}) == pytest.approx(10.0)
    # nothing lower-is-better: depth now counts -20 %
    assert delta_m(METRICS, BASELINES, set()) == pytest.approx((10.0 - 20.0 + 0.0) / 3)
    assert delta_m(BASELINES, BASELINES) == 0.0
    assert delta_m({"mIoU": torch.tensor(0.2)}, {"mIoU": 0.4}) == pytest.approx(-50.0)


def test_delta_m_errors():
    with pytest.raises(KeyError):
        delta_m({"seg/mIoU": 0.4}, BASELINES)
    with pytest.raises(KeyError):
        delta_m({"x/unknown": 1.0}, {"x/unknown": 2.0})  # no known direction
    with pytest.raises(ValueError):
        delta_m({"seg/mIoU": 0.4}, {"seg/mIoU": 0.0})
    with pytest.raises(ValueError):
        delta_m({}, {})


def test_multitask_delta_nested_and_flat():
    mtd = MultiTaskDelta(BASELINES)
    nested = {"seg": {"mIoU": torch.tensor(0.44)}, "depth": {"rmse_pooled": 0.5}, "normals": {"mean_angle": 20.0}}
    assert mtd(nested) == pytest.approx(10.0)
    assert mtd(METRICS) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        MultiTaskDelta({"seg/mIoU": 0.0})


def test_directions():
    assert metric_direction("val/depth/rmse_pooled") == "min"
    assert metric_direction("mIoU") == "max"
    directions = metric_directions()
    assert directions["rmse"] == "min" and directions["mIoU"] == "max"
    mains = [main_metric(t, p) for t in task_names() for p in get_task(t).metrics] + [MTL_METRIC]
    assert len(mains) == len(task_names()) + 2  # depth has two protocols
    for key, mode in mains:
        assert metric_direction(key) == mode
    with pytest.raises(KeyError):
        metric_direction("ods_threshold")


def _inputs(task: str, b: int = 2, h: int = 12, w: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if task in ("seg", "parts"):
        return torch.randn(b, 5, h, w, generator=g), torch.randint(0, 5, (b, h, w), generator=g)
    if task == "depth":
        gt = torch.rand(b, 1, h, w, generator=g) * 9
        return gt + torch.rand(b, 1, h, w, generator=g), gt
    if task == "normals":
        return torch.randn(b, 3, h, w, generator=g), torch.randn(b, 3, h, w, generator=g)
    gt = (torch.rand(b, 1, h, w, generator=g) > 0.7).float()
    return torch.rand(b, 1, h, w, generator=g), gt


CASES = [
    ("seg", {"num_classes": 5}, SegmentationMetrics),
    ("parts", {"num_classes": 5}, SegmentationMetrics),
    ("depth", {"max_depth": 10.0}, DepthMetrics),
    ("depth", {"protocol": "pooled", "max_depth": 10.0, "crop": "garg"}, PooledDepthRMSE),
    ("normals", {}, NormalsMetrics),
    ("edge", {"tolerance_px": 1}, EdgeMetrics),
    ("sal", {}, SaliencyMetrics),
]


@pytest.mark.parametrize(("task", "kwargs", "cls"), CASES)
def test_factory_main_metric_and_merged_states(task, kwargs, cls):
    """Two instances updated on halves of the data, merged like a DDP sum, equal one instance."""
    protocol = kwargs.get("protocol", "eigen")
    whole, part_a, part_b = (task_metrics(task, **dict(kwargs)) for _ in range(3))
    assert type(whole) is cls
    assert all(fx is not None for fx in whole._reductions.values())  # every state is DDP-reducible
    for seed in range(4):
        preds, target = _inputs(task, seed=seed)
        whole.update(preds, target)
        (part_a if seed % 2 else part_b).update(preds, target)
    part_a.merge_state(part_b)
    out, merged = whole.compute(), part_a.compute()
    key, _ = main_metric(task, protocol)
    assert key in out
    for k, v in out.items():
        assert v.ndim == 0 and torch.isfinite(v), k
        assert merged[k].item() == pytest.approx(v.item(), rel=1e-6, abs=1e-7), k
    whole.reset()
    assert all(torch.equal(getattr(whole, s), d) for s, d in whole._defaults.items())


def test_factory_errors_and_main_metric():
    with pytest.raises(ValueError):
        task_metrics("semseg")
    with pytest.raises(ValueError):
        task_metrics("depth", protocol="kitti")
    with pytest.raises(TypeError):
        task_metrics("seg")  # num_classes is required
    assert main_metric("depth") == ("d1", "max")
    assert main_metric("depth", "pooled") == ("rmse_pooled", "min")
    assert main_metric("mtl") == ("delta_m", "max")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize(("task", "kwargs", "cls"), CASES)
def test_on_gpu_matches_cpu(task, kwargs, cls):
    cpu, gpu = task_metrics(task, **dict(kwargs)), task_metrics(task, **dict(kwargs)).cuda()
    preds, target = _inputs(task)
    cpu.update(preds, target)
    gpu.update(preds.cuda(), target.cuda())
    out_cpu, out_gpu = cpu.compute(), gpu.compute()
    for k, v in out_cpu.items():
        assert out_gpu[k].device.type == "cuda"
        assert out_gpu[k].item() == pytest.approx(v.item(), rel=1e-5, abs=1e-6), k
