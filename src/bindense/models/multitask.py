"""Bi-MTDP multi-task dense predictor (PAPERS.md 5).

``image -> shared backbone -> [VIB] -> one decoder per task -> [cross-task module] -> upsample -> heads``.

Every conv is built by the method spec (binary or full precision), so any method preset gives a model; the
final 1x1 of each head is full precision. Heads, all at input resolution:

- ``seg`` / ``parts``: logits ``(B, K, H, W)`` (the segmentation head of BiDense);
- ``depth``: metres ``(B, 1, H, W)`` (sigmoid times ``max_depth``);
- ``normals``: unit vectors ``(B, 3, H, W)`` (L2-normalised over channels);
- ``edge`` / ``sal``: logits ``(B, 1, H, W)`` (a sigmoid gives the probability the metrics threshold).

``forward(x, return_features=True)`` also returns the named feature points used by distillation:
``backbone.stage1..4`` (before the VIB), ``vib.stageK`` (VIB outputs), ``decoder.<task>`` (neck maps before
the cross-task module) and ``cross_task.<task>`` (after it). ``last_kl`` holds the VIB KL of the last forward.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from bindense.models.build import PAIRS, WIDTHS
from bindense.models.convnext import ConvNeXt, load_convnext_checkpoint
from bindense.models.cross_task import CrossTaskModule
from bindense.models.dpt import DPT
from bindense.models.heads import DepthHead, PredictionConv, SegHead
from bindense.models.spec import MethodSpec
from bindense.models.upernet import UperNet
from bindense.models.vib import FeatureVIB
from bindense.models.vit import ViT

MT_TASKS = ("seg", "parts", "depth", "normals", "edge", "sal")
_BACKBONES = {"convnext": ConvNeXt, "vit": ViT}
_DECODERS = {"upernet": UperNet, "dpt": DPT}


class DenseHead(nn.Module):
    """``conv3x3 unit -> ReLU -> PredictionConv(out)`` with an optional output transform.

    ``output="normalize"`` L2-normalises over channels (surface normals); ``"identity"`` returns logits.
    """

    def __init__(
        self, spec: MethodSpec, in_channels: int, out_channels: int, hidden: int, output: str = "identity"
    ) -> None:
        super().__init__()
        if output not in ("identity", "normalize"):
            raise ValueError(f"unknown head output {output!r}")
        self.conv = spec.conv(in_channels, hidden, 3, padding=1, bias=False)
        self.act = nn.ReLU()
        self.predictor = PredictionConv(hidden, out_channels)
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        y = self.predictor(self.act(self.conv(x)))
        return F.normalize(y, dim=1) if self.output == "normalize" else y


def make_head(
    task: str,
    spec: MethodSpec,
    in_channels: int,
    *,
    num_classes: int | None = None,
    num_parts: int | None = None,
    max_depth: float | None = None,
    hidden: int = 32,
) -> nn.Module:
    """The head of ``task`` on a neck map with ``in_channels`` channels."""
    if task == "seg":
        if not num_classes:
            raise ValueError("the seg task needs num_classes")
        return SegHead(spec, in_channels, int(num_classes))
    if task == "parts":
        if not num_parts:
            raise ValueError("the parts task needs num_parts")
        return SegHead(spec, in_channels, int(num_parts))
    if task == "depth":
        if not max_depth:
            raise ValueError("the depth task needs max_depth")
        return DepthHead(spec, in_channels, float(max_depth), hidden=hidden)
    if task == "normals":
        return DenseHead(spec, in_channels, 3, hidden, output="normalize")
    if task in ("edge", "sal"):
        return DenseHead(spec, in_channels, 1, hidden)
    raise ValueError(f"unknown task {task!r}; expected one of {list(MT_TASKS)}")


class MultiTaskModel(nn.Module):
    """Shared backbone, optional VIB, per-task decoders, optional cross-task module, per-task heads."""

    def __init__(
        self,
        backbone: nn.Module,
        decoders: Mapping[str, nn.Module],
        heads: Mapping[str, nn.Module],
        spec: MethodSpec,
        vib: FeatureVIB | None = None,
        cross_task: CrossTaskModule | None = None,
    ) -> None:
        super().__init__()
        if list(decoders) != list(heads):
            raise ValueError(f"decoders {list(decoders)} and heads {list(heads)} must list the same tasks")
        self.backbone = backbone
        self.vib = vib
        self.decoders = nn.ModuleDict(decoders)
        self.cross_task = cross_task
        self.heads = nn.ModuleDict(heads)
        self.spec = spec

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    @property
    def last_kl(self) -> Tensor | None:
        """Mean per-element VIB KL of the last forward (None without VIB)."""
        return None if self.vib is None else self.vib.last_kl

    @property
    def feature_channels(self) -> dict[str, int]:
        """Channels of every named feature point."""
        stages = self.backbone.channels
        out = {f"backbone.{k}": v for k, v in stages.items()}
        if self.vib is not None:
            out.update({f"vib.{k}": stages[k] for k in self.vib.layers})
        for t, dec in self.decoders.items():
            out[f"decoder.{t}"] = dec.out_channels
            if self.cross_task is not None:
                out[f"cross_task.{t}"] = dec.out_channels
        return out

    def forward(self, x: Tensor, return_features: bool = False):
        stages = self.backbone(x)
        shared = self.vib(stages) if self.vib is not None else stages
        necks = {t: dec(shared) for t, dec in self.decoders.items()}
        mixed = self.cross_task(necks) if self.cross_task is not None else necks
        size = x.shape[-2:]
        outputs = {
            t: head(F.interpolate(mixed[t], size=size, mode="bilinear", align_corners=True))
            for t, head in self.heads.items()
        }
        if not return_features:
            return outputs
        features = {f"backbone.{k}": v for k, v in stages.items()}
        if self.vib is not None:
            features.update({f"vib.{k}": shared[k] for k in self.vib.layers})
        features.update({f"decoder.{t}": v for t, v in necks.items()})
        if self.cross_task is not None:
            features.update({f"cross_task.{t}": v for t, v in mixed.items()})
        return outputs, features


def _accepted(cls: type, options: Mapping[str, Any], drop: Sequence[str] = ()) -> dict[str, Any]:
    """The entries of ``options`` that ``cls(spec, ...)`` takes as keyword arguments."""
    names = set(inspect.signature(cls.__init__).parameters) - {"self", "spec", *drop}
    return {k: v for k, v in options.items() if k in names}


def build_multitask_model(
    decoder: str,
    backbone: str,
    width: str,
    method: Mapping[str, Any] | MethodSpec | str,
    tasks: Sequence[str],
    num_classes: int | None = None,
    num_parts: int | None = None,
    max_depth: float | None = None,
    pretrained_ckpt: str | None = None,
    vib: Mapping[str, Any] | None = None,
    cross_task: Mapping[str, Any] | None = None,
    head_hidden: int | None = None,
    **kw: Any,
) -> MultiTaskModel:
    """Build the Bi-MTDP model for one method preset.

    Args:
        decoder / backbone / width: as in :func:`bindense.models.build_model` (``upernet``+``convnext`` or
            ``dpt``+``vit``; ``tiny`` or ``nano``).
        method: ``method`` config or :class:`MethodSpec` (binary or fp32).
        tasks: distinct entries of ``seg, parts, depth, normals, edge, sal`` (one decoder and head each).
        num_classes / num_parts / max_depth: outputs of seg / parts, depth range in metres.
        pretrained_ckpt: local ImageNet ConvNeXt checkpoint for the fp32 layouts.
        vib: ``{enabled, stages, binary, logvar_init, logvar_scale_init, sample_at_eval}``; ``beta`` is read
            by the LightningModule; ``stages`` lists backbone features (``stage1..4``) or ``all``;
            ``binary=False`` makes its 1x1 heads full precision in a binary model.
        cross_task: ``{enabled, binary, kernel_size}``; ``binary=True`` is the Bi-MTDP-C variant (the
            module's convs use the method's binary unit), ``False`` keeps it full precision.
        head_hidden: hidden width of the depth / normals / edge / saliency heads (default: the width
            preset's ``depth_hidden``).
        **kw: overrides of the width preset (``dims``, ``depths``, ``neck_channels``, ...).
    """
    if decoder not in PAIRS or PAIRS[decoder] != backbone:
        raise ValueError(f"unsupported decoder/backbone pair {decoder!r}+{backbone!r}; expected one of {PAIRS}")
    if width not in WIDTHS[backbone]:
        raise ValueError(f"unknown width {width!r} for {backbone}; expected one of {list(WIDTHS[backbone])}")
    tasks = list(tasks)
    if not tasks or any(t not in MT_TASKS for t in tasks) or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct entries of {list(MT_TASKS)}, got {tasks}")
    spec = MethodSpec.from_config(method)
    cfg = {**WIDTHS[backbone][width], **kw}
    backbone_cls, decoder_cls = _BACKBONES[backbone], _DECODERS[decoder]
    bb_opts = _accepted(backbone_cls, cfg)
    dec_opts = _accepted(decoder_cls, cfg, drop=("in_channels",))  # in_channels = image channels
    known = set(bb_opts) | set(dec_opts) | {"depth_hidden"}
    unknown = sorted(set(cfg) - known - set(WIDTHS[backbone][width]))
    if unknown:
        raise ValueError(f"unknown model options {unknown} for {decoder}+{backbone}")

    net = backbone_cls(spec, **bb_opts)
    if pretrained_ckpt:
        if backbone != "convnext":
            raise ValueError("pretrained_ckpt is only supported for the ConvNeXt backbone")
        load_convnext_checkpoint(net, pretrained_ckpt)
    channels = net.channels
    dec_in = list(channels.values()) if decoder == "upernet" else net.embed_dim
    decoders = {t: decoder_cls(spec, dec_in, **dec_opts) for t in tasks}
    neck = next(iter(decoders.values())).out_channels

    vib_module = None
    vib = dict(vib or {})
    if vib.get("enabled", False):
        stages = vib.get("stages", "all")
        names = list(channels) if stages in ("all", None) else [str(s) for s in stages]
        conv = partial(spec.conv, bias=False, binary=bool(vib.get("binary", True)))
        vib_module = FeatureVIB(
            channels,
            names,
            conv=conv,
            logvar_init=float(vib.get("logvar_init", -4.0)),
            logvar_scale_init=float(vib.get("logvar_scale_init", 0.1)),
            sample_at_eval=bool(vib.get("sample_at_eval", False)),
        )

    cross = None
    cross_cfg = dict(cross_task or {})
    if cross_cfg.get("enabled", False):
        conv = partial(spec.conv, bias=False, binary=bool(cross_cfg.get("binary", True)))
        cross = CrossTaskModule(tasks, neck, conv=conv, kernel_size=int(cross_cfg.get("kernel_size", 3)))

    hidden = int(head_hidden or cfg.get("depth_hidden", 32))
    heads = {
        t: make_head(t, spec, neck, num_classes=num_classes, num_parts=num_parts, max_depth=max_depth, hidden=hidden)
        for t in tasks
    }
    return MultiTaskModel(net, decoders, heads, spec, vib=vib_module, cross_task=cross)
