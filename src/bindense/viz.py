"""Colour maps for dense maps (labels, depth, normals, edges, saliency) and prediction panels (PNG)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from bindense.data.voc import voc_palette
from bindense.registry import Registry
from bindense.tasks import get_task

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_COLOR = (255, 255, 255)


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def label_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 palette of the PASCAL VOC kind (the one VOC label PNGs carry)."""
    return voc_palette(n)


def colorize_labels(labels: torch.Tensor | np.ndarray, ignore_index: int | None = 255) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8; ``ignore_index`` pixels are white."""
    lab = _numpy(labels).astype(np.int64)
    out = label_palette(max(256, int(lab.max(initial=0)) + 1))[np.clip(lab, 0, None)]
    if ignore_index is not None:
        out[lab == ignore_index] = IGNORE_COLOR
    return out


def colorize_scalar(
    x: torch.Tensor | np.ndarray, vmin: float | None = None, vmax: float | None = None, cmap: str = "magma"
) -> np.ndarray:
    """(H, W) float map -> (H, W, 3) uint8 through a matplotlib colour map."""
    a = _numpy(x).astype(np.float64)
    lo = float(np.nanmin(a)) if vmin is None else vmin
    hi = float(np.nanmax(a)) if vmax is None else vmax
    t = np.clip((a - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return (matplotlib.colormaps[cmap](t)[..., :3] * 255).astype(np.uint8)


def colorize_depth(
    depth: torch.Tensor | np.ndarray, max_depth: float | None = None, cmap: str = "magma_r"
) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 (near = bright); pixels <= 0 (invalid) are black."""
    d = _numpy(depth).astype(np.float64)
    valid = d > 0
    hi = max_depth if max_depth is not None else (float(d[valid].max()) if valid.any() else 1.0)
    out = colorize_scalar(d, 0.0, hi, cmap)
    out[~valid] = 0
    return out


def colorize_normals(normals: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) normals -> (H, W, 3) uint8 as ``(n / |n| + 1) / 2``; zero vectors (invalid) are black."""
    n = _numpy(normals).astype(np.float64).transpose(1, 2, 0)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    out = ((n / np.maximum(norm, 1e-12) + 1.0) * 127.5).astype(np.uint8)
    out[norm[..., 0] < 1e-6] = 0
    return out


def denormalize(
    image: torch.Tensor | np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """(3, H, W) normalised image -> (H, W, 3) uint8."""
    a = _numpy(image).astype(np.float64).transpose(1, 2, 0)
    a = a * np.asarray(std) + np.asarray(mean)
    return (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)


def colorize(
    task: str,
    x: torch.Tensor | np.ndarray,
    *,
    ignore_index: int | None = 255,
    max_depth: float | None = None,
) -> np.ndarray:
    """One sample's map of ``task`` (target or prediction, with or without a channel axis) -> RGB uint8, by
    the task's ``display`` (:mod:`bindense.tasks`).

    labels (seg / parts): labels, or scores (C, H, W) arg-maxed; depth: metres; normals: (3, H, W);
    probability (edge / sal): probabilities, or logits (values outside [0, 1] go through a sigmoid);
    scalar: the map's own range through ``magma``.
    """
    display = get_task(task).display
    if display not in COLORMAPS:
        raise ValueError(f"task {task!r} asks for an unregistered display: {COLORMAPS.error(display)}")
    return COLORMAPS[display](_numpy(x), ignore_index=ignore_index, max_depth=max_depth)


def _show_labels(a: np.ndarray, ignore_index: int | None, **_: object) -> np.ndarray:
    if a.ndim == 3:
        a = a.argmax(0) if a.shape[0] > 1 else a[0]
    return colorize_labels(a, ignore_index)


def _show_probability(a: np.ndarray, **_: object) -> np.ndarray:
    a = a[0] if a.ndim == 3 else a
    if a.size and (a.min() < 0 or a.max() > 1):
        a = 1.0 / (1.0 + np.exp(-a))
    return colorize_scalar(a, 0.0, 1.0, "gray")


#: ``Task.display`` -> ``fn(map, ignore_index=..., max_depth=...)`` -> RGB uint8 (:mod:`bindense.tasks`)
COLORMAPS: Registry[Callable[..., np.ndarray]] = Registry("colour map", "Task.display")
COLORMAPS.register("labels", _show_labels)
COLORMAPS.register("depth", lambda a, max_depth=None, **_: colorize_depth(a[0] if a.ndim == 3 else a, max_depth))
COLORMAPS.register("normals", lambda a, **_: colorize_normals(a))
COLORMAPS.register("probability", _show_probability)
COLORMAPS.register("scalar", lambda a, **_: colorize_scalar(a[0] if a.ndim == 3 else a))


def save_prediction_panel(
    path: str | Path,
    images: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    preds: Mapping[str, torch.Tensor],
    tasks: Sequence[str],
    *,
    num_samples: int = 4,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int | None = 255,
    max_depth: float | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG grid: one row per sample, columns image | gt task | pred task | ... ; return its path.

    Depth ground truth and prediction of a row share one colour scale (``max_depth`` or the row's gt max).
    """
    n = min(num_samples, images.shape[0])
    cols = 1 + 2 * len(tasks)
    fig = Figure(figsize=(2.2 * cols, 2.2 * n + (0.3 if title else 0)))  # no pyplot: backend-independent
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        row = [("image", denormalize(images[i], mean, std))]
        for t in tasks:
            depth_hi = max_depth
            if get_task(t).display == "depth" and depth_hi is None:
                gt = _numpy(targets[t][i])
                depth_hi = float(gt[gt > 0].max()) if (gt > 0).any() else None
            kw = {"ignore_index": ignore_index, "max_depth": depth_hi}
            row.append((f"{t} gt", colorize(t, targets[t][i], **kw)))
            row.append((f"{t} pred", colorize(t, preds[t][i], **kw)))
        for j, (name, rgb) in enumerate(row):
            ax = axes[i, j]
            ax.imshow(rgb, interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
