"""The one model factory, ``build_model(decoder, backbone, width, method, tasks, ...) -> DenseModel``.

``image -> backbone -> [VIB] -> decoder (shared, or one per task) -> [cross-task module] -> upsample -> heads``.

A single-task or BiDense model shares one decoder between its heads; the Bi-MTDP multi-task model
(docs/MULTITASK.md#1-the-paper-and-our-choices) gives each task its own decoder (``shared_decoder=False``) and may add
the VIB and the
cross-task module. Every conv is built by the method spec (binary or full precision), so any method preset
gives a model; the final 1x1 of each head is full precision. The heads are those the tasks declare
(:mod:`bindense.tasks`, :func:`bindense.models.heads.make_head`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindense.binary.layers import configure_lean
from bindense.models.convnext import ConvNeXt, load_convnext_checkpoint
from bindense.models.cross_task import CrossTaskModule
from bindense.models.dpt import DPT
from bindense.models.heads import head_inputs, make_head
from bindense.models.spec import MethodSpec
from bindense.models.upernet import UperNet
from bindense.models.vib import FeatureVIB
from bindense.models.vit import ViT
from bindense.tasks import check_tasks

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
_BACKBONES: dict[str, type[nn.Module]] = {"convnext": ConvNeXt, "vit": ViT}
_DECODERS: dict[str, type[nn.Module]] = {"upernet": UperNet, "dpt": DPT}


class DenseModel(nn.Module):
    """Backbone -> [VIB] -> decoder(s) -> [cross-task module] -> bilinear upsample to the input size -> heads.

    ``decoder`` is one module shared by every head (state-dict keys ``decoder.*``) or ``{task: module}``
    (``decoders.<task>.*``). ``forward(x)`` returns ``{task: (B, C, H, W)}``; ``forward(x,
    return_features=True)`` returns ``(outputs, features)`` with the named feature points used by
    distillation: ``backbone.stage1..4`` (before the VIB), ``vib.stageK`` (VIB outputs), ``decoder`` (shared)
    or ``decoder.<task>`` (neck maps at their own stride, before the cross-task module) and
    ``cross_task.<task>`` (after it). ``last_kl`` holds the VIB KL of the last forward.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decoder: nn.Module | Mapping[str, nn.Module],
        heads: Mapping[str, nn.Module],
        spec: MethodSpec,
        vib: FeatureVIB | None = None,
        cross_task: CrossTaskModule | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        shared = isinstance(decoder, nn.Module)
        if not shared and list(decoder) != list(heads):
            raise ValueError(f"decoders {list(decoder)} and heads {list(heads)} must list the same tasks")
        if shared and cross_task is not None:
            raise ValueError("the cross-task module needs one decoder per task (shared_decoder=False)")
        self.backbone = backbone
        self.vib = vib
        if shared:
            self.decoder = decoder
        else:
            self.decoders = nn.ModuleDict(decoder)
        self.cross_task = cross_task
        self.heads = nn.ModuleDict(heads)
        self.spec = spec
        #: run every feature map in NHWC memory order (parameters untouched; outputs returned contiguous)
        self.channels_last = channels_last

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    @property
    def shared_decoder(self) -> bool:
        return "decoder" in self._modules

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
        if self.shared_decoder:
            out["decoder"] = self.decoder.out_channels
            return out
        for t, dec in self.decoders.items():
            out[f"decoder.{t}"] = dec.out_channels
            if self.cross_task is not None:
                out[f"cross_task.{t}"] = dec.out_channels
        return out

    def forward(self, x: Tensor, return_features: bool = False):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        stages = self.backbone(x)
        shared = self.vib(stages) if self.vib is not None else stages
        size = x.shape[-2:]
        if self.shared_decoder:
            necks = {"decoder": self.decoder(shared)}
            full = F.interpolate(necks["decoder"], size=size, mode="bilinear", align_corners=True)
            outputs = {t: head(full).contiguous() for t, head in self.heads.items()}
        else:
            necks = {f"decoder.{t}": dec(shared) for t, dec in self.decoders.items()}
            mixed = {t: necks[f"decoder.{t}"] for t in self.decoders}
            if self.cross_task is not None:
                mixed = self.cross_task(mixed)
                necks.update({f"cross_task.{t}": v for t, v in mixed.items()})
            outputs = {
                t: head(F.interpolate(mixed[t], size=size, mode="bilinear", align_corners=True)).contiguous()
                for t, head in self.heads.items()
            }
        if not return_features:
            return outputs
        features = {f"backbone.{k}": v for k, v in stages.items()}
        if self.vib is not None:
            features.update({f"vib.{k}": shared[k] for k in self.vib.layers})
        features.update(necks)
        return outputs, {k: v.contiguous() for k, v in features.items()}


def _accepted(cls: type, options: Mapping[str, Any], drop: Sequence[str] = ()) -> dict[str, Any]:
    """The entries of ``options`` that ``cls(spec, ...)`` takes as keyword arguments."""
    names = set(inspect.signature(cls.__init__).parameters) - {"self", "spec", *drop}
    return {k: v for k, v in options.items() if k in names}


def _gated_conv(spec: MethodSpec, options: Mapping[str, Any]) -> partial:
    """The conv of an optional module (VIB, cross-task): the method's unit, or full precision (binary=False)."""
    return partial(spec.conv, bias=False, binary=bool(options.get("binary", True)))


def build_model(
    decoder: str,
    backbone: str,
    width: str,
    method: Mapping[str, Any] | MethodSpec | str,
    tasks: Sequence[str],
    num_classes: int | None = None,
    num_parts: int | None = None,
    max_depth: float | None = None,
    pretrained_ckpt: str | None = None,
    shared_decoder: bool = True,
    vib: Mapping[str, Any] | None = None,
    cross_task: Mapping[str, Any] | None = None,
    head_hidden: int | None = None,
    checkpoint_stages: Sequence[int] = (),
    saved_activation: str = "exact",
    fused_units: bool = True,
    channels_last: bool = False,
    unit_kernels: str = "native",
    **kw: Any,
) -> DenseModel:
    """Build a dense prediction model for one method (table row), single- or multi-task.

    Args:
        decoder: ``upernet`` (with ``backbone=convnext``) or ``dpt`` (with ``backbone=vit``).
        backbone: ``convnext`` or ``vit``.
        width: ``tiny`` (paper size) or ``nano`` (CPU demos), see :data:`WIDTHS`.
        method: the ``method`` config (conf/method/*.yaml) or a :class:`MethodSpec`.
        tasks: distinct registered task names (:mod:`bindense.tasks`), one head each.
        num_classes / num_parts / max_depth: data-config values the tasks' heads read (seg / parts outputs,
            depth range in metres); required by the tasks that declare them.
        pretrained_ckpt: local ImageNet ConvNeXt checkpoint (official key layout) for the fp32 layouts.
        shared_decoder: one decoder for every head (BiDense) or one per task (Bi-MTDP).
        vib: ``{enabled, stages, binary, logvar_init, logvar_scale_init, sample_at_eval}``; ``beta`` is read
            by the LightningModule; ``stages`` lists backbone features (``stage1..4``) or ``all``;
            ``binary=False`` makes its 1x1 heads full precision in a binary model.
        cross_task: ``{enabled, binary, kernel_size}`` (needs ``shared_decoder=False``); ``binary=True`` is the
            Bi-MTDP-C variant (the module's convs use the method's binary unit), ``False`` keeps it fp32.
        head_hidden: hidden width of the non-label heads (default: the width preset's ``depth_hidden``).
        checkpoint_stages: ConvNeXt stage numbers (1-4) trained with activation checkpointing.
        saved_activation: what the fused binary units keep of DAB's input for backward: ``exact`` (float32) or
            ``bf16`` (an approximation of the surrogate gradient; docs/TRAINING.md).
        fused_units: one autograd node per binary unit's binarizers + op (False: one node per binarizer, the
            former path; same values and gradients, more memory).
        channels_last: run the feature maps in NHWC memory order (faster convolutions on CPU); parameters and
            the returned outputs keep the default layout.
        unit_kernels: the fused units' elementwise work: ``native`` (the C++ kernels of the native extension on
            CPU float32, the eager ops elsewhere) or ``eager`` (torch ops, bit for bit the unfused path).
        **kw: overrides of the width preset (``dims``, ``depths``, ``neck_channels``, ``depth_hidden``,
            ``bins``, ``dropout``, ``layer_scale_init``; ViT: ``embed_dim``, ``depth``, ``num_heads``,
            ``pos_grid``, ``mlp_ratio``, ``features``), other keyword arguments of the backbone and decoder
            classes, and ``in_channels``.
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
    tasks = check_tasks(tasks)
    data = {"num_classes": num_classes, "num_parts": num_parts, "max_depth": max_depth}
    for t in tasks:
        head_inputs(t, data)  # a missing num_classes / max_depth fails before anything is built
    vib, cross_task = dict(vib or {}), dict(cross_task or {})
    if cross_task.get("enabled", False) and shared_decoder:
        raise ValueError("model.cross_task needs one decoder per task: set model.shared_decoder=false")
    if backbone != "convnext":
        if pretrained_ckpt:
            raise ValueError("pretrained_ckpt is only supported for the ConvNeXt backbone")
        if checkpoint_stages:
            raise ValueError("model.checkpoint_stages is only supported for the ConvNeXt backbone")
    spec = MethodSpec.from_config(method)
    cfg = {**WIDTHS[backbone][width], **kw}
    backbone_cls, decoder_cls = _BACKBONES[backbone], _DECODERS[decoder]
    bb_opts = _accepted(backbone_cls, cfg, drop=("checkpoint_stages",))
    dec_opts = _accepted(decoder_cls, cfg, drop=("in_channels",))  # in_channels = image channels
    unknown = sorted(set(cfg) - set(bb_opts) - set(dec_opts) - set(WIDTHS[backbone][width]))
    if unknown:
        raise ValueError(f"unknown model options {unknown} for {decoder}+{backbone}")
    if checkpoint_stages:
        bb_opts["checkpoint_stages"] = list(checkpoint_stages)

    net = backbone_cls(spec, **bb_opts)
    if pretrained_ckpt:
        load_convnext_checkpoint(net, pretrained_ckpt)
    dec_in = net.dims if decoder == "upernet" else net.embed_dim
    if shared_decoder:
        necks: nn.Module | dict[str, nn.Module] = decoder_cls(spec, dec_in, **dec_opts)
        neck_channels = necks.out_channels
    else:
        necks = {t: decoder_cls(spec, dec_in, **dec_opts) for t in tasks}
        neck_channels = next(iter(necks.values())).out_channels

    vib_module = None
    if vib.get("enabled", False):
        stages = vib.get("stages", "all")
        channels = net.channels
        names = list(channels) if stages in ("all", None) else [str(s) for s in stages]
        vib_module = FeatureVIB(
            channels,
            names,
            conv=_gated_conv(spec, vib),
            logvar_init=float(vib.get("logvar_init", -4.0)),
            logvar_scale_init=float(vib.get("logvar_scale_init", 0.1)),
            sample_at_eval=bool(vib.get("sample_at_eval", False)),
        )
    cross = None
    if cross_task.get("enabled", False):
        kernel = int(cross_task.get("kernel_size", 3))
        cross = CrossTaskModule(tasks, neck_channels, conv=_gated_conv(spec, cross_task), kernel_size=kernel)

    hidden = int(head_hidden or cfg["depth_hidden"])
    heads = {t: make_head(t, spec, neck_channels, data, hidden) for t in tasks}
    model = DenseModel(net, necks, heads, spec, vib=vib_module, cross_task=cross, channels_last=channels_last)
    return configure_lean(model, fused_units, saved_activation, unit_kernels)
