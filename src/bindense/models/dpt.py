"""DPT decoder on four stride-14 ViT features, built from the method's units (docs/METHODS.md, section 3).

- projections: conv1x1 ``C -> [C/8, C/4, C/2, C]`` (48, 96, 192, 384 for ViT-S);
- resize: Up x4 and Up x2 (transposed conv k = s; the bypass is nearest-upsample + cfb), identity,
  Down (conv 3x3 /2 p1; the bypass is avgpool(3, 2, 1) + cfb) -> strides 3.5, 7, 14, 28;
- per level conv3x3 -> ``features`` (256);
- four fusion blocks, deepest first: ``out = x (+ rcu1(skip)); out = rcu2(out)``, bilinear resize
  (align_corners) to the next level (x2 for the last); no 1x1 ``out_conv`` (the authors' DPT has none); a
  residual conv unit is ``x + conv(act(conv(act(x))))`` with the spec's ``decoder_act`` (LearnableBias + PReLU
  for BiDense; there the units' bypasses replace the outer ``x +``) and conv biases, as the authors' units;
- output conv3x3 ``features -> neck`` (128). The model upsamples it to the input size before the heads.

With ``fpn_norm`` false (standard fp32 layout) the convs have a bias and no BN (original DPT); otherwise each is a
unit with BN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from bindense.models.spec import MethodSpec
from bindense.models.upernet import as_list, up


class ResidualConvUnit(nn.Module):
    """``x + conv2(act2(conv1(act1(x))))``; without ``block_residual`` (BiDense) without the outer ``x +`` (the
    units' own bypasses are the residual path, as in the BiDense ConvNeXt block and FPN smoothing)."""

    def __init__(self, spec: MethodSpec, channels: int) -> None:
        super().__init__()
        self.residual = spec.block_residual
        self.act1 = spec.act(spec.decoder_act, channels)
        self.conv1 = spec.conv(channels, channels, 3, padding=1, bias=True, norm=spec.fpn_norm)
        self.act2 = spec.act(spec.decoder_act, channels)
        self.conv2 = spec.conv(channels, channels, 3, padding=1, bias=True, norm=spec.fpn_norm)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.act2(self.conv1(self.act1(x))))
        return x + y if self.residual else y


class FusionBlock(nn.Module):
    """DPT feature fusion: ``rcu2(x + rcu1(skip))`` then bilinear resize (the authors' block: no ``out_conv``).

    The deepest block has no skip input, hence no ``rcu1`` (the authors build one and never call it).
    """

    def __init__(self, spec: MethodSpec, channels: int, has_skip: bool = True) -> None:
        super().__init__()
        self.rcu1 = ResidualConvUnit(spec, channels) if has_skip else None
        self.rcu2 = ResidualConvUnit(spec, channels)

    def forward(self, x: Tensor, skip: Tensor | None, size: Sequence[int]) -> Tensor:
        if skip is not None:
            if self.rcu1 is None:
                raise ValueError("this fusion block takes no skip input")
            x = x + self.rcu1(skip)
        return up(self.rcu2(x), size)


class DPT(nn.Module):
    """DPT neck on ViT features.

    Args:
        spec: method spec.
        in_channels: ViT embedding width (384 for ViT-S).
        features: fusion width (256).
        neck_channels: output width (128).
        project_channels: per-level projection widths (default ``in_channels * [1/8, 1/4, 1/2, 1]``).
    """

    def __init__(
        self,
        spec: MethodSpec,
        in_channels: int = 384,
        features: int = 256,
        neck_channels: int = 128,
        project_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        proj = list(project_channels or [in_channels // 8, in_channels // 4, in_channels // 2, in_channels])
        norm = spec.fpn_norm
        self.out_channels = neck_channels
        self.projects = nn.ModuleList(spec.conv(in_channels, c, 1, norm=norm) for c in proj)
        self.resize = nn.ModuleList(
            [
                spec.conv_transpose(proj[0], proj[0], 4, stride=4, norm=norm),
                spec.conv_transpose(proj[1], proj[1], 2, stride=2, norm=norm),
                nn.Identity(),
                spec.conv(proj[3], proj[3], 3, stride=2, padding=1, norm=norm),
            ]
        )
        self.layers_rn = nn.ModuleList(spec.conv(c, features, 3, padding=1, bias=False, norm=norm) for c in proj)
        self.fusions = nn.ModuleList(FusionBlock(spec, features, has_skip=i < 3) for i in range(4))
        self.neck = spec.conv(features, neck_channels, 3, padding=1, norm=norm)

    def forward(self, features: Mapping[str, Tensor] | Sequence[Tensor]) -> Tensor:
        levels = [
            rn(resize(project(f)))
            for f, project, resize, rn in zip(as_list(features), self.projects, self.resize, self.layers_rn)
        ]
        out = None
        for i in (3, 2, 1, 0):  # deepest first; fusions[i] fuses level i
            size = levels[i - 1].shape[-2:] if i > 0 else [2 * s for s in levels[0].shape[-2:]]
            out = self.fusions[i](levels[i] if out is None else out, None if out is None else levels[i], size)
        return self.neck(out)
