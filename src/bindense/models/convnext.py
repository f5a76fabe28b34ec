"""ConvNeXt backbones in three shapes, picked by the method spec's ``original_backbone`` and ``block_residual``.

- original (``original_backbone``; ``fp32`` / ``fp32_scratch``): LayerNorm stem and pre-norm downsampling, block
  ``x + gamma * pw2(GELU(pw1(LN(dw(x)))))`` with layer scale 1e-6; module names follow the official
  facebookresearch/ConvNeXt key layout, so its ImageNet checkpoints load directly.
- BNN-shaped (``block_residual``; ``bnn``): BN-ConvNeXt, block ``y = x + dw(x)``, ``out = x + pw2(act(pw1(y)))``
  (every conv a unit with its BN), downsampling ``unit 2x2/2 + BN`` (or BiSR's down-sampler).
- BiDense (no ``block_residual``; ``bidense``): block ``pw2(act(pw1(dw(x))))`` (each unit carries its bypass),
  downsampling by the Transition ``unit 2x2/2 + cfb(avgpool2(x))``.

The stem conv is always full precision. ``forward`` returns ``{"stage1": ..., "stage4": ...}`` (strides 4-32).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bindense.binary import BinaryConv2d, BinaryLinear, RPReLU
from bindense.models.spec import MethodSpec


class LayerNorm2d(nn.LayerNorm):
    """ConvNeXt's channels-first LayerNorm on ``(B, C, H, W)`` (biased variance, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


class OriginalBlock(nn.Module):
    """Original ConvNeXt block: dw7x7 -> LN -> Linear(4d) -> GELU -> Linear(d) -> layer scale, + x."""

    def __init__(self, spec: MethodSpec, dim: int, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        if spec.block_act not in ("gelu", "relu", "none"):
            raise ValueError(f"the LayerNorm ConvNeXt block takes an elementwise block_act, got {spec.block_act!r}")
        self.dwconv = spec.conv(dim, dim, 7, padding=3, groups=dim, norm=False, bypass="none")
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = spec.linear(dim, 4 * dim, activation=spec.activation, weight=spec.weight)
        self.act = spec.act(spec.block_act, 4 * dim)
        self.pwconv2 = spec.linear(4 * dim, dim, activation=spec.activation, weight=spec.weight)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class BNNBlock(nn.Module):
    """BN-ConvNeXt block of the binary baselines: ``y = x + dw(x)``; ``x + pw2(act(pw1(y)))`` (units carry BN)."""

    def __init__(self, spec: MethodSpec, dim: int) -> None:
        super().__init__()
        self.dwconv = spec.conv(dim, dim, 7, padding=3, groups=dim)
        self.pwconv1 = spec.conv(dim, 4 * dim, 1)
        self.act = spec.act(spec.block_act, 4 * dim)
        self.pwconv2 = spec.conv(4 * dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = x + self.dwconv(x)
        return x + self.pwconv2(self.act(self.pwconv1(y)))


class BiDenseBlock(BNNBlock):
    """BiDense / CFB block: ``pw2(act(pw1(dw(x))))``, no block residual; the units' bypasses carry the signal."""

    def forward(self, x: Tensor) -> Tensor:
        return self.pwconv2(self.act(self.pwconv1(self.dwconv(x))))


class BiSRDown(nn.Module):
    """BiSRNet down-sampler C -> 2C: ``a = avgpool2(x)``; ``cat(a + RPReLU(conv_i(a)) for i in 1, 2)``, no BN."""

    def __init__(self, spec: MethodSpec, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            spec.conv(dim, dim, 3, padding=1, bias=False, norm=False, bypass="none") for _ in range(2)
        )
        self.acts = nn.ModuleList(RPReLU(dim) for _ in range(2))

    def forward(self, x: Tensor) -> Tensor:
        a = F.avg_pool2d(x, 2)
        return torch.cat([a + act(conv(a)) for conv, act in zip(self.convs, self.acts)], dim=1)


def _downsample(spec: MethodSpec, dim: int) -> nn.Module:
    if spec.downsample == "ln":
        return nn.Sequential(LayerNorm2d(dim), spec.conv(dim, 2 * dim, 2, stride=2, norm=False, bypass="none"))
    if spec.downsample == "bisr":
        return BiSRDown(spec, dim)
    return nn.Sequential(spec.conv(dim, 2 * dim, 2, stride=2))  # with bypass=cfb: the BiDense Transition


class ConvNeXt(nn.Module):
    """ConvNeXt feature extractor; ``downsample_layers[0]`` is the full-precision stem.

    Args:
        spec: method spec (layout family, units, activations).
        dims: stage widths, e.g. [96, 192, 384, 768] (ConvNeXt-T).
        depths: blocks per stage, e.g. [3, 3, 9, 3].
        in_channels: image channels.
        layer_scale_init: layer scale of the original blocks.
        checkpoint_stages: stage numbers (1-4) whose activations are recomputed in backward instead of kept
            (activation checkpointing: less memory, one more forward of those stages; docs/TRAINING.md).
    """

    def __init__(
        self,
        spec: MethodSpec,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (3, 3, 9, 3),
        in_channels: int = 3,
        layer_scale_init: float = 1e-6,
        checkpoint_stages: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.spec = spec
        self.dims = list(dims)
        bad = [s for s in checkpoint_stages if s not in range(1, len(dims) + 1)]
        if bad:
            raise ValueError(
                f"model.checkpoint_stages takes stage numbers 1..{len(dims)}, got {list(checkpoint_stages)}"
            )
        self.checkpoint_stages = sorted(set(checkpoint_stages))
        stem_conv = spec.conv(
            in_channels, dims[0], 4, stride=4, bias=True, norm=not spec.original_backbone, binary=False
        )
        stem = [stem_conv, LayerNorm2d(dims[0])] if spec.original_backbone else [stem_conv]
        self.downsample_layers = nn.ModuleList([nn.Sequential(*stem)])
        for i in range(3):
            if dims[i + 1] != 2 * dims[i]:
                raise ValueError(f"ConvNeXt stage widths must double, got {list(dims)}")
            self.downsample_layers.append(_downsample(spec, dims[i]))
        if spec.original_backbone:

            def block(d: int) -> nn.Module:
                return OriginalBlock(spec, d, layer_scale_init)
        else:
            block_cls = BNNBlock if spec.block_residual else BiDenseBlock

            def block(d: int) -> nn.Module:
                return block_cls(spec, d)

        self.stages = nn.ModuleList(nn.Sequential(*(block(d) for _ in range(n))) for d, n in zip(dims, depths))
        if spec.original_backbone:
            self.apply(_trunc_normal_init)

    @property
    def channels(self) -> dict[str, int]:
        """Feature name -> channels."""
        return {f"stage{i + 1}": d for i, d in enumerate(self.dims)}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = {}
        for i, (down, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = down(x)
            if i + 1 in self.checkpoint_stages and self.training and torch.is_grad_enabled():
                x = checkpoint(stage, x, use_reentrant=False, context_fn=lambda s=stage: _recompute_contexts(s))
            else:
                x = stage(x)
            features[f"stage{i + 1}"] = x
        return features


def _recompute_contexts(
    stage: nn.Module,
) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """Contexts of the checkpointed forward and of its recomputation (which must not update BN statistics)."""
    return contextlib.nullcontext(), _frozen_batchnorm_stats(stage)


@contextlib.contextmanager
def _frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics as usual but leave their running statistics untouched."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def _trunc_normal_init(module: nn.Module) -> None:
    """Original ConvNeXt init (trunc-normal std 0.02, zero bias) for its full-precision convs and linears."""
    if isinstance(module, (BinaryConv2d, BinaryLinear)) and module.weight_bits == 32:
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def load_convnext_checkpoint(backbone: ConvNeXt, path: str | os.PathLike) -> None:
    """Load a local ImageNet checkpoint in the official ConvNeXt key layout into the original backbone.

    Accepts ``{"model": state_dict}`` (official release), ``{"state_dict": ...}`` or a bare state dict; a
    ``backbone.`` prefix is stripped and the unused classifier (``norm.*``, ``head.*``) dropped. Nothing
    is ever downloaded.
    """
    if not backbone.spec.original_backbone:
        raise ValueError(
            f"pretrained_ckpt needs the original (LayerNorm) ConvNeXt (method.original_backbone=true, the fp32 "
            f"layouts), not layout {backbone.spec.layout!r} (binary models are trained from scratch)"
        )
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ConvNeXt checkpoint {path!r} not found. Place an ImageNet ConvNeXt-T checkpoint in the official "
            "facebookresearch/ConvNeXt key layout there (e.g. convnext_tiny_1k_224_ema.pth, downloaded by hand) "
            "or set model.pretrained_ckpt=null; bindense never downloads weights."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("norm.", "head."))}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"{path!r} does not match this ConvNeXt (width {backbone.dims}): {err}") from err
