"""Small shape helpers shared by the metrics."""

from __future__ import annotations

import torch


def drop_channel_dim(x: torch.Tensor, name: str) -> torch.Tensor:
    """Return ``x`` as (B, H, W): accept (B, H, W) or (B, 1, H, W)."""
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim == 3:
        return x
    raise ValueError(f"{name} must be (B,H,W) or (B,1,H,W), got shape {tuple(x.shape)}")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    """Raise a readable error when two maps differ in shape (metrics never resize)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{names}: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}; resize predictions to the "
            "ground-truth size before updating the metric"
        )


def default_thresholds(thresholds: int | list[float] | tuple[float, ...] | torch.Tensor) -> torch.Tensor:
    """``n`` -> the n evenly spaced values 1/(n+1) .. n/(n+1) (99 -> 0.01 .. 0.99); a list is used as is."""
    if isinstance(thresholds, int):
        if thresholds < 1:
            raise ValueError(f"need at least one threshold, got {thresholds}")
        t = torch.arange(1, thresholds + 1, dtype=torch.float64) / (thresholds + 1)
    else:
        t = torch.as_tensor(thresholds, dtype=torch.float64).flatten()
        if t.numel() == 0:
            raise ValueError("empty threshold list")
    return torch.sort(t).values


def counts_at_or_above(values: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """For each threshold t (sorted ascending), the number of ``values`` that are >= t.

    One bucketize + bincount instead of T comparisons over all pixels.
    """
    thr = thresholds.to(device=values.device, dtype=torch.float64)
    # number of thresholds <= v, i.e. v passes thresholds[0 .. idx-1]; compared in float64
    idx = torch.bucketize(values.flatten().to(torch.float64), thr, right=True)
    hist = torch.bincount(idx, minlength=thr.numel() + 1)
    # pass count for threshold k = number of values whose idx > k
    return hist.flip(0).cumsum(0).flip(0)[1:]
