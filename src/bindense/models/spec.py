"""The method spec: one object that decides every conv, linear and activation of a model.

A ``method`` config (a preset of conf/method/*.yaml, possibly with overrides) becomes a :class:`MethodSpec`.
Backbones, decoders and heads never look at the method or layout name; they ask the spec for units
(:meth:`MethodSpec.conv`, :meth:`MethodSpec.conv_transpose`, :meth:`MethodSpec.linear`), binarizers
(:meth:`MethodSpec.token_binarizer`) and activations (:meth:`MethodSpec.act`), and read its explicit layout
fields (``original_backbone``, ``block_residual``, ``fpn_norm``, ``smooth_residual``; docs/EXTENDING.md).

The presets are the only source of default values: a method config takes its missing keys from the preset of its
``layout`` (conf/method/<layout>.yaml), then from :data:`ROOT_PRESET` (``bidense.yaml``, which lists every key).
Layouts shipped: ``bidense`` (no block residual, every unit carries its bypass, Transition downsampling),
``bnn`` (BN-ConvNeXt of the binary baselines: block residuals, residual shared FPN smoothing), ``fp32``
(original ConvNeXt + standard UperNet, no decoder BN) and ``fp32_scratch`` (original ConvNeXt + the BNN-shaped
decoder in full precision).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from bindense.binary import (
    ACTIVATIONS,
    BYPASSES,
    SIGN_ZERO,
    WEIGHTS,
    BiasPReLU,
    Binarizer,
    BinaryConv2d,
    BinaryConvTranspose2d,
    BinaryLinear,
    Maxout,
    RPReLU,
    make_activation,
    set_sign_zero,
)
from bindense.binary.binarizers import dab_group_size

#: the method presets (conf/method/*.yaml of the repository)
PRESETS_DIR = Path(__file__).resolve().parents[3] / "conf" / "method"
#: the preset that lists every key: the defaults of keys that neither a config nor its layout's preset sets
ROOT_PRESET = "bidense"

DOWNSAMPLES = ("ln", "conv", "bisr")
TRANSPOSE_SCALES = ("input", "output")
VIT_MLP_ACTS = ("gelu", "prelu")

#: activations between units by config name (``block_act`` / ``decoder_act`` / ``fusion_act``)
ACT_FACTORIES: dict[str, Callable[[int], nn.Module]] = {
    "relu": lambda channels: nn.ReLU(),
    "gelu": lambda channels: nn.GELU(),
    "prelu": BiasPReLU,
    "rprelu": RPReLU,
    "maxout": Maxout,
    "none": lambda channels: nn.Identity(),
}
ACTS = tuple(ACT_FACTORIES)


def preset_names(directory: Path = PRESETS_DIR) -> list[str]:
    """Names of the method presets (conf/method/*.yaml)."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_preset(name: str, directory: Path = PRESETS_DIR) -> dict[str, Any]:
    """The keys of method preset ``name`` (``<directory>/<name>.yaml``) as a plain dict (a fresh copy)."""
    return dict(_read_preset(name, Path(directory)))


@functools.cache
def _read_preset(name: str, directory: Path) -> dict[str, Any]:
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"method preset {name!r} not found: expected {path}; presets: {preset_names(directory)}")
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of method keys, got {type(values).__name__}")
    return values


@dataclass(frozen=True)
class MethodSpec:
    """Binarization recipe + layout of one table row (conf/method/*.yaml; every value comes from a preset).

    Attributes:
        name: preset name (informative only).
        layout: name of the layout preset (conf/method/<layout>.yaml) whose keys fill in what a config leaves
            out; a label otherwise (logging, export metadata): no module compares it.
        activation / weight / bypass: the conv units' activation binarizer, weight binarizer (registered names,
            :data:`bindense.binary.ACTIVATIONS` / :data:`bindense.binary.WEIGHTS`) and bypass.
        block_act: activation between the two pointwise convs of a ConvNeXt block (``prelu`` is
            LearnableBias -> PReLU, ``rprelu`` is LearnableBias -> PReLU -> LearnableBias).
        decoder_act: activation after the PPM convs (and in the DPT residual conv units).
        fusion_act: activation after the FPN fusion conv.
        downsample: ConvNeXt stage transition: ``ln`` (LayerNorm then conv 2x2/2, original),
            ``conv`` (unit 2x2/2 + BN; with ``bypass=cfb`` its bypass is cfb(avgpool2(x)), i.e. exactly the
            BiDense Transition), ``bisr`` (BiSR's AvgPool + two residual 3x3 branches, no BN).
        bias: conv bias at the positions where the authors' units default it (block, downsampling,
            laterals, smoothing, neck); the PPM, fusion and head convs never have one.
        original_backbone: the original ConvNeXt (LayerNorm stem and blocks, GELU, layer scale, block residual)
            instead of the BN-ConvNeXt built from units.
        block_residual: blocks add their input back: the BN-ConvNeXt block (``x + dw(x)``, then
            ``x + pw2(act(pw1(.)))``) and the DPT residual conv unit; false: the units' bypasses are the only
            residual path (BiDense). The original ConvNeXt block always has its residual.
        fpn_norm: BN on the decoder's units (UperNet laterals, smoothing, neck; DPT convs) and on the depth
            head's conv; false: plain convs with a bias there (standard fp32 UperNet / DPT).
        smooth_residual: the shared FPN smoothing is used as ``M + smooth(M)`` (BNN-shaped decoder).
        linear_activation / linear_weight: binarizers of the ViT linears and attention.
        vit_mlp_act: ViT MLP activation, ``gelu`` (released code) or ``prelu`` (LearnableBias -> PReLU, paper-time).
        transpose_scale: axis of a transposed conv's weight scale, ``input`` (authors) or ``output``.
        sign_zero: an exact zero binarizes to ``plus`` (+1) or ``zero`` (0, ``torch.sign``), weights and
            activations alike (docs/METHODS.md).
        attention_normalize: divide each row of the binary attention product ``A v`` by its number of selected
            keys (ours, default) or keep the literal ``A v`` of the authors' code (``false``; docs/METHODS.md).
        dab_groups: DAB scale per group of this many input channels, ``all`` (per sample) or null (per channel);
            docs/DEPLOY.md "DAB groups".
    """

    name: str
    layout: str
    activation: str
    weight: str
    bypass: str
    block_act: str
    decoder_act: str
    fusion_act: str
    downsample: str
    bias: bool
    original_backbone: bool
    block_residual: bool
    fpn_norm: bool
    smooth_residual: bool
    linear_activation: str
    linear_weight: str
    vit_mlp_act: str
    transpose_scale: str
    sign_zero: str
    attention_normalize: bool
    dab_groups: int | str | None

    def __post_init__(self) -> None:
        dab_group_size(self.dab_groups, 1)  # validates the value
        checks = [
            ("activation", self.activation, tuple(ACTIVATIONS)),
            ("weight", self.weight, tuple(WEIGHTS)),
            ("bypass", self.bypass, BYPASSES),
            ("block_act", self.block_act, ACTS),
            ("decoder_act", self.decoder_act, ACTS),
            ("fusion_act", self.fusion_act, ACTS),
            ("downsample", self.downsample, DOWNSAMPLES),
            ("linear_activation", self.linear_activation, tuple(ACTIVATIONS)),
            ("linear_weight", self.linear_weight, tuple(WEIGHTS)),
            ("vit_mlp_act", self.vit_mlp_act, VIT_MLP_ACTS),
            ("transpose_scale", self.transpose_scale, TRANSPOSE_SCALES),
            ("sign_zero", self.sign_zero, SIGN_ZERO),
        ]
        for key, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"method.{key}={value!r} is not one of {list(allowed)}")
        if self.original_backbone and not self.block_residual:
            raise ValueError("method.original_backbone=true needs method.block_residual=true (its blocks have one)")

    @classmethod
    def from_config(cls, method: Mapping[str, Any] | MethodSpec | str, presets: Path = PRESETS_DIR) -> MethodSpec:
        """Spec from a ``method`` mapping (Hydra DictConfig or dict) or a preset name (``from_config("bnn")``).

        Keys the mapping leaves out come from the preset of its ``layout`` (``<presets>/<layout>.yaml``), then
        from :data:`ROOT_PRESET`; ``presets`` is the preset directory (conf/method).
        """
        if isinstance(method, MethodSpec):
            return method
        if isinstance(method, str):
            method = load_preset(method, presets)
        method = dict(method)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(method) - known)
        if unknown:
            raise ValueError(f"unknown method keys {unknown}; known keys: {sorted(known)}")
        if known <= set(method):  # complete (e.g. the resolved config of a run or an export): no preset files read
            values = method
        else:
            root = load_preset(ROOT_PRESET, presets)
            layout = method.get("layout", root["layout"])
            base = load_preset(layout, presets)
            if base.get("layout") != layout:
                raise ValueError(
                    f"method.layout={layout!r}: {presets / layout}.yaml is a preset on layout "
                    f"{base.get('layout')!r}, not a layout (a layout preset names itself in its `layout` key)"
                )
            values = {**root, **base, **method}
        missing = sorted(known - set(values))
        if missing:
            raise ValueError(f"method keys {missing} are set nowhere: add them to {presets / ROOT_PRESET}.yaml")
        for key in ("bias", "original_backbone", "block_residual", "fpn_norm", "smooth_residual"):
            values[key] = bool(values[key])
        return cls(**{k: values[k] for k in known})

    def with_(self, **changes: Any) -> MethodSpec:
        return replace(self, **changes)

    @property
    def is_binary(self) -> bool:
        """1-bit activations and weights in the conv units."""
        return ACTIVATIONS[self.activation].bits == 1 and WEIGHTS[self.weight].bits == 1

    # ---- factories ----
    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool | None = None,
        norm: bool = True,
        bypass: str | None = None,
        binary: bool = True,
    ) -> BinaryConv2d:
        """The method's conv unit ``BN(conv(wq(W), aq(x))) + bypass(x)``.

        ``bias=None`` uses ``self.bias``; ``bypass=None`` uses ``self.bypass``; ``binary=False`` gives a
        full-precision conv (+ BN) with no bypass (stem).
        """
        activation, weight = (self.activation, self.weight) if binary else ("fp32", "fp32")
        unit = BinaryConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=self.bias if bias is None else bias,
            activation=activation,
            weight=weight,
            bypass=(self.bypass if bypass is None else bypass) if binary else "none",
            norm=norm,
            activation_groups=self.dab_groups,
        )
        return set_sign_zero(unit, self.sign_zero)

    def conv_transpose(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        bias: bool | None = None,
        norm: bool = True,
        bypass: str | None = None,
    ) -> BinaryConvTranspose2d:
        """The method's transposed conv unit (DPT Up); the bypass upsamples (nearest) then cfb.

        The weight scale is taken per ``transpose_scale`` channel of the ``(C_in, C_out, k, k)`` weight.
        """
        unit = BinaryConvTranspose2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            bias=self.bias if bias is None else bias,
            activation=self.activation,
            weight=self.weight,
            bypass=self.bypass if bypass is None else bypass,
            norm=norm,
            activation_groups=self.dab_groups,
            weight_channel_dim=TRANSPOSE_SCALES.index(self.transpose_scale),
        )
        return set_sign_zero(unit, self.sign_zero)

    def linear(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str | None = None,
        weight: str | None = None,
    ) -> BinaryLinear:
        """Token linear on ``(..., C)``: the ViT's (``linear_*`` binarizers unless given), no bypass."""
        unit = BinaryLinear(
            in_features,
            out_features,
            bias=bias,
            activation=activation or self.linear_activation,
            weight=weight or self.linear_weight,
            bypass="none",
            activation_groups=self.dab_groups,
        )
        return set_sign_zero(unit, self.sign_zero)

    def token_binarizer(self, channels: int) -> Binarizer:
        """The binarizer of the ViT attention operands q, k, v (``linear_activation`` on ``(B, N, C)`` tokens).

        Per channel: ``dab_groups`` groups the scale in front of a unit's popcount, which the attention matmuls
        are not.
        """
        return set_sign_zero(make_activation(self.linear_activation, channels, channels_last=True), self.sign_zero)

    def act(self, name: str, channels: int) -> nn.Module:
        """Activation by name (``block_act``/``decoder_act``/``fusion_act`` values or ``relu``)."""
        return make_act(name, channels)


def make_act(name: str, channels: int) -> nn.Module:
    """``relu | gelu | prelu (LearnableBias -> PReLU) | rprelu | maxout | none`` on ``(B, C, H, W)``."""
    if name not in ACT_FACTORIES:
        raise ValueError(f"unknown activation {name!r}; expected one of {list(ACTS)}")
    return ACT_FACTORIES[name](channels)
