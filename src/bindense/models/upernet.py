"""UperNet decoder of BiDense (docs/ARCHITECTURES.md#2-the-upernet-dataflow): pyramid pooling + non-cascaded FPN + neck.

Dataflow for features C1..C4 (strides 4..32):

- PPM on C4: per bin b, ``up(act(conv1x1(pool_b(C4))))``; ``C4' = drop(act(conv3x3(cat[C4, b1, b2, b4, b6])))``.
- Laterals L2, L3, L4 = conv1x1(C2), conv1x1(C3), conv1x1(C4'); L1 = C1 (no lateral).
- Top-down, not cascaded: ``M_i = up(L_{i+1}) + L_i`` (the lateral of the level above, not M_{i+1}).
- ONE smoothing module shared by the three levels (``self.smooth`` lists the same object three times, so
  ``state_dict`` lists it three times, ``parameters()`` once): ``S_i = smooth(M_i)`` (``+ M_i`` in the
  BNN-shaped layouts).
- Fusion ``act(conv3x3(cat[S1, up(S2), up(S3), up(L4)]))``, then the neck ``conv3x3(fpn -> neck)``.

Every resize is bilinear with ``align_corners=True``. The output is the neck map at stride 4 (the model
upsamples it to the input size before the heads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindense.models.spec import MethodSpec


def up(x: Tensor, like: Tensor | Sequence[int]) -> Tensor:
    """Bilinear resize (align_corners=True) to ``like``'s spatial size (or a given size)."""
    size = like.shape[-2:] if isinstance(like, Tensor) else tuple(like)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def as_list(features: Mapping[str, Tensor] | Sequence[Tensor]) -> list[Tensor]:
    """Backbone features as the ordered list [stage1, ..., stage4]."""
    if isinstance(features, Mapping):
        return [features[f"stage{i}"] for i in range(1, 5)]
    return list(features)


class PPMBranch(nn.Sequential):
    """AdaptiveAvgPool(bin) -> conv1x1 (unit) -> act; upsampled by the caller."""

    def __init__(self, spec: MethodSpec, in_channels: int, out_channels: int, bin_size: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(bin_size),
            spec.conv(in_channels, out_channels, 1, bias=False),
            spec.act(spec.decoder_act, out_channels),
        )


class PyramidPooling(nn.Module):
    """Pyramid pooling module on the stride-32 feature; output has the input's channels."""

    def __init__(self, spec: MethodSpec, channels: int, bins: Sequence[int] = (1, 2, 4, 6), dropout: float = 0.1):
        super().__init__()
        branch = channels // 4
        self.branches = nn.ModuleList(PPMBranch(spec, channels, branch, b) for b in bins)
        cat = channels + len(bins) * branch
        self.bottleneck = nn.Sequential(
            spec.conv(cat, channels, 3, padding=1, bias=False),
            spec.act(spec.decoder_act, channels),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        pooled = [up(branch(x), x) for branch in self.branches]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UperNet(nn.Module):
    """UperNet neck of BiDense / its baselines; the method spec picks units, norms and residuals.

    Args:
        spec: method spec.
        in_channels: backbone widths [C1, C2, C3, C4]; the FPN width is C1.
        neck_channels: neck output width (128 in the paper, ``features // 2``).
        bins: pyramid pooling bins.
        dropout: Dropout2d after the PPM bottleneck.
    """

    def __init__(
        self,
        spec: MethodSpec,
        in_channels: Sequence[int],
        neck_channels: int = 128,
        bins: Sequence[int] = (1, 2, 4, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        c1 = in_channels[0]
        self.spec = spec
        self.out_channels = neck_channels
        self.ppm = PyramidPooling(spec, in_channels[-1], bins, dropout)
        self.laterals = nn.ModuleList(spec.conv(c, c1, 1, norm=spec.fpn_norm) for c in in_channels[1:])
        smooth = spec.conv(c1, c1, 3, padding=1, norm=spec.fpn_norm)
        self.smooth = nn.ModuleList([smooth, smooth, smooth])  # one module, three positions
        self.fusion = nn.Sequential(spec.conv(4 * c1, c1, 3, padding=1, bias=False), spec.act(spec.fusion_act, c1))
        self.neck = spec.conv(c1, neck_channels, 3, padding=1, norm=spec.fpn_norm)

    def forward(self, features: Mapping[str, Tensor] | Sequence[Tensor]) -> Tensor:
        c1, c2, c3, c4 = as_list(features)
        lateral = [c1, *(conv(f) for conv, f in zip(self.laterals, (c2, c3, self.ppm(c4))))]  # L1..L4
        smoothed = []
        for level in (2, 1, 0):  # M3, M2, M1 from the laterals of the level above (non-cascaded)
            merged = up(lateral[level + 1], lateral[level]) + lateral[level]
            s = self.smooth[level](merged)
            smoothed.append(merged + s if self.spec.smooth_residual else s)
        s3, s2, s1 = smoothed
        fused = self.fusion(torch.cat([s1, up(s2, s1), up(s3, s1), up(lateral[3], s1)], dim=1))
        return self.neck(fused)
