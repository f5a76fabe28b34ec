"""The method spec: one object that decides every conv, linear and activation of a model.

A ``method`` config (conf/method/*.yaml) becomes a :class:`MethodSpec`. Backbones, decoders and heads never
look at the method name; they ask the spec for units (:meth:`MethodSpec.conv`, :meth:`MethodSpec.conv_transpose`,
:meth:`MethodSpec.linear`) and activations (:meth:`MethodSpec.act`), and read the few layout switches it
exposes (docs/METHODS.md, README "Layouts"). Layout families:

- ``bidense``: CFB / BiDense topology (no block residual, every unit carries its bypass, Transition downsampling).
- ``bnn``: BN-ConvNeXt topology of the binary baselines (inner + outer block residual, conv+BN downsampling,
  residual shared FPN smoothing, BN after laterals and neck).
- ``fp32``: original ConvNeXt (LayerNorm, GELU, layer scale) + standard UperNet (no BN on laterals,
  smoothing and neck; smoothing without residual).
- ``fp32_scratch``: original ConvNeXt + the BNN-shaped decoder in full precision (README "Layouts").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from torch import nn

from bindense.binary import (
    ACTIVATIONS,
    BYPASSES,
    DAB,
    SIGN_ZERO,
    WEIGHTS,
    BinaryConv2d,
    BinaryConvTranspose2d,
    BinaryLinear,
    LearnableBias,
    Maxout,
    RPReLU,
    make_weight,
    set_sign_zero,
)
from bindense.binary.binarizers import dab_group_size

LAYOUTS = ("bidense", "bnn", "fp32", "fp32_scratch")
ACTS = ("relu", "gelu", "prelu", "rprelu", "maxout", "none")
DOWNSAMPLES = ("ln", "conv", "bisr")
TRANSPOSE_SCALES = ("input", "output")
VIT_MLP_ACTS = ("gelu", "prelu")

_LAYOUT_DEFAULTS: dict[str, dict[str, Any]] = {
    "bidense": dict(
        activation="dab",
        weight="scaled_sign",
        bypass="cfb",
        block_act="prelu",
        decoder_act="prelu",
        fusion_act="rprelu",
        downsample="conv",
        bias=False,
        linear_activation="bivit",
        linear_weight="bivit_sign",
    ),
    "bnn": dict(
        activation="sign",
        weight="sign",
        bypass="none",
        block_act="gelu",
        decoder_act="relu",
        fusion_act="relu",
        downsample="conv",
        bias=True,
        linear_activation="sign",
        linear_weight="sign",
    ),
    "fp32": dict(
        activation="fp32",
        weight="fp32",
        bypass="none",
        block_act="gelu",
        decoder_act="relu",
        fusion_act="relu",
        downsample="ln",
        bias=True,
        linear_activation="fp32",
        linear_weight="fp32",
    ),
}
_LAYOUT_DEFAULTS["fp32_scratch"] = dict(_LAYOUT_DEFAULTS["fp32"])


@dataclass(frozen=True)
class MethodSpec:
    """Binarization recipe + layout family of one table row (see conf/method/*.yaml).

    Attributes:
        name: preset name (informative only).
        layout: ``bidense | bnn | fp32 | fp32_scratch``.
        activation / weight / bypass: the conv units' activation binarizer, weight binarizer and bypass.
        block_act: activation between the two pointwise convs of a ConvNeXt block (``prelu`` is
            LearnableBias -> PReLU, ``rprelu`` is LearnableBias -> PReLU -> LearnableBias).
        decoder_act: activation after the PPM convs (and in the DPT residual conv units).
        fusion_act: activation after the FPN fusion conv.
        downsample: ConvNeXt stage transition: ``ln`` (LayerNorm then conv 2x2/2, original),
            ``conv`` (unit 2x2/2 + BN; with ``bypass=cfb`` its bypass is cfb(avgpool2(x)), i.e. exactly the
            BiDense Transition), ``bisr`` (BiSR's AvgPool + two residual 3x3 branches, no BN).
        bias: conv bias at the positions where the authors' units default it (block, downsampling,
            laterals, smoothing, neck); the PPM, fusion and head convs never have one.
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

    name: str = "bidense"
    layout: str = "bidense"
    activation: str = "dab"
    weight: str = "scaled_sign"
    bypass: str = "cfb"
    block_act: str = "prelu"
    decoder_act: str = "prelu"
    fusion_act: str = "rprelu"
    downsample: str = "conv"
    bias: bool = False
    linear_activation: str = "bivit"
    linear_weight: str = "bivit_sign"
    vit_mlp_act: str = "gelu"
    transpose_scale: str = "input"
    sign_zero: str = "plus"
    attention_normalize: bool = True
    dab_groups: int | str | None = None

    def __post_init__(self) -> None:
        dab_group_size(self.dab_groups, 1)  # validates the value
        checks = [
            ("layout", self.layout, LAYOUTS),
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

    @classmethod
    def from_config(cls, method: Mapping[str, Any] | MethodSpec | str) -> MethodSpec:
        """Spec from a ``method`` mapping (Hydra DictConfig or dict); missing keys take the layout defaults.

        A bare string is a layout name with its defaults (handy in tests: ``from_config("bnn")``).
        """
        if isinstance(method, MethodSpec):
            return method
        if isinstance(method, str):
            method = {"name": method, "layout": method}
        method = dict(method)
        layout = method.get("layout", "bidense")
        if layout not in LAYOUTS:
            raise ValueError(f"method.layout={layout!r} is not one of {list(LAYOUTS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(method) - known)
        if unknown:
            raise ValueError(f"unknown method keys {unknown}; known keys: {sorted(known)}")
        values = {"name": layout, **_LAYOUT_DEFAULTS[layout], **method}
        values["bias"] = bool(values["bias"])
        return cls(**values)

    def with_(self, **changes: Any) -> MethodSpec:
        return replace(self, **changes)

    # ---- layout switches (docs/METHODS.md, README "Layouts") ----
    @property
    def original_backbone(self) -> bool:
        """LayerNorm ConvNeXt (GELU, layer scale, block residual): the fp32 rows."""
        return self.layout in ("fp32", "fp32_scratch")

    @property
    def fpn_norm(self) -> bool:
        """BN after laterals, smoothing and neck (every layout but the standard fp32 UperNet)."""
        return self.layout != "fp32"

    @property
    def smooth_residual(self) -> bool:
        """Shared FPN smoothing used as ``M + smooth(M)`` (BNN-shaped layouts)."""
        return self.layout in ("bnn", "fp32_scratch")

    @property
    def is_binary(self) -> bool:
        return self.activation != "fp32" and self.weight != "fp32"

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
        )
        return set_sign_zero(self._dab_grouped(unit), self.sign_zero)

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
        )
        unit.weight_binarizer = make_weight(self.weight, channel_dim=TRANSPOSE_SCALES.index(self.transpose_scale))
        return set_sign_zero(self._dab_grouped(unit), self.sign_zero)

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
        )
        return set_sign_zero(self._dab_grouped(unit), self.sign_zero)

    def _dab_grouped(self, unit):
        """``unit`` with its DAB activation binarizer grouped per ``dab_groups`` (unchanged when null)."""
        dab = unit.activation_binarizer
        if self.dab_groups is not None and isinstance(dab, DAB):
            unit.activation_binarizer = DAB(dab.channels, dab.channels_last, groups=self.dab_groups)
        return unit

    def act(self, name: str, channels: int) -> nn.Module:
        """Activation by name (``block_act``/``decoder_act``/``fusion_act`` values or ``relu``)."""
        return make_act(name, channels)


def make_act(name: str, channels: int) -> nn.Module:
    """``relu | gelu | prelu (LearnableBias -> PReLU) | rprelu | maxout | none`` on ``(B, C, H, W)``."""
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "prelu":
        return nn.Sequential(LearnableBias(channels), nn.PReLU(channels))
    if name == "rprelu":
        return RPReLU(channels)
    if name == "maxout":
        return Maxout(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; expected one of {list(ACTS)}")
