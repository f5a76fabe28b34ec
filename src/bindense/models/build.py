"""The one model factory: ``build_model(decoder, backbone, width, method, tasks, ...) -> DenseModel``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindense.binary.layers import configure_lean
from bindense.models.convnext import ConvNeXt, load_convnext_checkpoint
from bindense.models.dpt import DPT
from bindense.models.heads import TASKS, DepthHead, SegHead
from bindense.models.spec import MethodSpec
from bindense.models.upernet import UperNet
from bindense.models.vit import ViT

#: Width presets. ``tiny`` is the paper's size (ConvNeXt-T; ViT-S/14 for the ViT); ``nano`` is for CPU demos.
WIDTHS: dict[str, dict[str, dict[str, Any]]] = {
    "convnext": {
        "tiny": dict(dims=[96, 192, 384, 768], depths=[3, 3, 9, 3], neck_channels=128, depth_hidden=32),
        "nano": dict(dims=[24, 48, 96, 192], depths=[1, 1, 2, 1], neck_channels=32, depth_hidden=16),
    },
    "vit": {
        "tiny": dict(
            embed_dim=384, depth=12, num_heads=6, pos_grid=37, features=256, neck_channels=128, depth_hidden=32
        ),
        "nano": dict(embed_dim=96, depth=4, num_heads=3, pos_grid=16, features=64, neck_channels=32, depth_hidden=16),
    },
}
PAIRS = {"upernet": "convnext", "dpt": "vit"}
_BACKBONE_KEYS = {
    "convnext": ("dims", "depths", "layer_scale_init"),
    "vit": ("embed_dim", "depth", "num_heads", "pos_grid", "layer_scale_init", "mlp_ratio"),
}
_DECODER_KEYS = {"upernet": ("neck_channels", "bins", "dropout"), "dpt": ("features", "neck_channels")}


class DenseModel(nn.Module):
    """Backbone -> decoder (neck) -> bilinear upsample to the input size -> one head per task.

    ``forward(x)`` returns ``{"seg": (B, K, H, W) logits, "depth": (B, 1, H, W) metres}`` (the tasks built);
    ``forward(x, return_features=True)`` returns ``(outputs, features)`` with the features
    ``backbone.stage1 .. backbone.stage4`` and ``decoder`` (the neck output at its own stride, before the
    upsampling and the heads).
    """

    def __init__(
        self,
        backbone: nn.Module,
        decoder: nn.Module,
        heads: Mapping[str, nn.Module],
        spec: MethodSpec,
        channels_last: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.heads = nn.ModuleDict(heads)
        self.spec = spec
        #: run every feature map in NHWC memory order (parameters untouched; outputs returned contiguous)
        self.channels_last = channels_last

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    @property
    def feature_channels(self) -> dict[str, int]:
        """Channels of every named feature."""
        return {**{f"backbone.{k}": v for k, v in self.backbone.channels.items()}, "decoder": self.decoder.out_channels}

    def forward(self, x: Tensor, return_features: bool = False):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        stages = self.backbone(x)
        neck = self.decoder(stages)
        full = F.interpolate(neck, size=x.shape[-2:], mode="bilinear", align_corners=True)
        outputs = {task: head(full).contiguous() for task, head in self.heads.items()}
        if not return_features:
            return outputs
        features = {f"backbone.{k}": v.contiguous() for k, v in stages.items()}
        features["decoder"] = neck.contiguous()
        return outputs, features


def build_model(
    decoder: str,
    backbone: str,
    width: str,
    method: Mapping[str, Any] | MethodSpec | str,
    tasks: Sequence[str],
    num_classes: int | None = None,
    max_depth: float | None = None,
    pretrained_ckpt: str | None = None,
    checkpoint_stages: Sequence[int] = (),
    saved_activation: str = "exact",
    fused_units: bool = True,
    channels_last: bool = False,
    **kw: Any,
) -> DenseModel:
    """Build a dense prediction model for one method (table row).

    Args:
        decoder: ``upernet`` (with ``backbone=convnext``) or ``dpt`` (with ``backbone=vit``).
        backbone: ``convnext`` or ``vit``.
        width: ``tiny`` (paper size) or ``nano`` (CPU demos), see :data:`WIDTHS`.
        method: the ``method`` config (conf/method/*.yaml) or a :class:`MethodSpec`.
        tasks: subset of ``seg``, ``depth`` (one head each on the shared decoder).
        num_classes: segmentation outputs (required with ``seg``).
        max_depth: depth range in metres (required with ``depth``).
        pretrained_ckpt: local ImageNet ConvNeXt checkpoint (official key layout) for the fp32 layouts.
        checkpoint_stages: ConvNeXt stage numbers (1-4) trained with activation checkpointing.
        saved_activation: what the fused binary units keep of DAB's input for backward: ``exact`` (float32) or
            ``bf16`` (an approximation of the surrogate gradient; docs/TRAINING.md).
        fused_units: one autograd node per binary unit's binarizers + op (False: one node per binarizer, the
            former path; same values and gradients, more memory).
        channels_last: run the feature maps in NHWC memory order (faster convolutions on CPU); parameters and
            the returned outputs keep the default layout.
        **kw: overrides of the width preset (``dims``, ``depths``, ``neck_channels``, ``depth_hidden``,
            ``bins``, ``dropout``, ``layer_scale_init``; ViT: ``embed_dim``, ``depth``, ``num_heads``,
            ``pos_grid``, ``mlp_ratio``, ``features``) and ``in_channels``.
    """
    if decoder not in PAIRS:
        raise ValueError(f"unknown decoder {decoder!r}; expected one of {list(PAIRS)}")
    if backbone not in WIDTHS:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {list(WIDTHS)}")
    if PAIRS[decoder] != backbone:
        raise ValueError(
            f"decoder {decoder!r} pairs with backbone {PAIRS[decoder]!r}, not {backbone!r} "
            "(supported: upernet + convnext, dpt + vit)"
        )
    if width not in WIDTHS[backbone]:
        raise ValueError(f"unknown width {width!r} for {backbone}; expected one of {list(WIDTHS[backbone])}")
    tasks = list(tasks)
    if not tasks or any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct entries of {list(TASKS)}, got {tasks}")
    if "seg" in tasks and not num_classes:
        raise ValueError("the seg task needs num_classes")
    if "depth" in tasks and not max_depth:
        raise ValueError("the depth task needs max_depth")
    spec = MethodSpec.from_config(method)
    cfg = {**WIDTHS[backbone][width], **kw}
    allowed = set(WIDTHS[backbone][width]) | set(_BACKBONE_KEYS[backbone]) | set(_DECODER_KEYS[decoder])
    unknown = sorted(set(cfg) - allowed - {"in_channels"})
    if unknown:
        raise ValueError(f"unknown model options {unknown} for {decoder}+{backbone}")
    pick = {k: cfg[k] for k in _BACKBONE_KEYS[backbone] if k in cfg}
    in_channels = cfg.get("in_channels", 3)

    if backbone == "convnext":
        net = ConvNeXt(spec, in_channels=in_channels, checkpoint_stages=list(checkpoint_stages or ()), **pick)
        if pretrained_ckpt:
            load_convnext_checkpoint(net, pretrained_ckpt)
        neck = UperNet(spec, net.dims, **{k: cfg[k] for k in _DECODER_KEYS["upernet"] if k in cfg})
    else:
        if pretrained_ckpt:
            raise ValueError("pretrained_ckpt is only supported for the ConvNeXt backbone")
        if checkpoint_stages:
            raise ValueError("model.checkpoint_stages is only supported for the ConvNeXt backbone")
        net = ViT(spec, in_channels=in_channels, **pick)
        neck = DPT(spec, net.embed_dim, **{k: cfg[k] for k in _DECODER_KEYS["dpt"] if k in cfg})
    heads: dict[str, nn.Module] = {}
    if "seg" in tasks:
        heads["seg"] = SegHead(spec, neck.out_channels, int(num_classes))
    if "depth" in tasks:
        heads["depth"] = DepthHead(spec, neck.out_channels, float(max_depth), hidden=cfg["depth_hidden"])
    return configure_lean(DenseModel(net, neck, heads, spec, channels_last), fused_units, saved_activation)
