"""The native runtime of ``.bdn`` exports: binary convs on the bit-packed kernels of :mod:`bindense.native`.

``load_packed(path, runtime="native")`` replaces every exported ``BinaryConv2d`` by a :class:`NativeBinaryConv2d`
that keeps one copy of its 1-bit weights (the kernels' layout, :func:`bindense.native.prepare_weights`, made at load;
the packed words on the float path) and runs

    y = out_scale[o] * S + out_bias[o] + residual

with ``S`` the popcount sum of the +-1 activations and weights, ``out_scale`` = BN scale x weight scale x the
activation's scalar scale, ``out_bias`` = BN shift (+ the conv bias through BN) and ``residual`` the unit's
full-precision bypass (CFB), all fused into the kernel's epilogue. The other layers stay in torch.

How each activation binarizer becomes packed bits: :mod:`bindense.export.inputs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindense import native
from bindense.binary import BinaryConv2d, cfb
from bindense.binary.binarizers import DAB, AdaBinActivation, RSign, SignActivation
from bindense.binary.layers import LearnableBias
from bindense.export.bits import unpack_signs
from bindense.export.inputs import CHANNEL_SUMS, INPUTS, BinaryInput, dab_threshold
from bindense.models.convnext import BiDenseBlock, BNNBlock
from bindense.models.heads import DepthHead, SegHead

#: modules whose forward applies their activation attribute straight to their unit attribute's output:
#: type -> (unit, activation)
RELU_AFTER: dict[type[nn.Module], tuple[str, str]] = {
    SegHead: ("conv", "act"), DepthHead: ("conv", "act"), BNNBlock: ("pwconv1", "act"),
    BiDenseBlock: ("pwconv1", "act"),
}  # fmt: skip


def prelu_parts(act: nn.Module) -> tuple[Tensor | None, Tensor, Tensor | None] | None:
    """``(bias, slope, bias_after)`` of an activation the epilogue computes as ``prelu(y + bias, slope) +
    bias_after``: ``nn.PReLU``, ``LearnableBias -> PReLU`` (the ``prelu`` act) or ``LearnableBias -> PReLU ->
    LearnableBias`` (RPReLU); None for any other module."""
    parts = list(act.children()) if isinstance(act, nn.Sequential) else [act]
    kinds = [type(m) for m in parts]
    if kinds not in ([nn.PReLU], [LearnableBias, nn.PReLU], [LearnableBias, nn.PReLU, LearnableBias]):
        return None
    prelu = parts[kinds.index(nn.PReLU)]
    bias = parts[0].bias.detach().reshape(-1) if kinds[0] is LearnableBias else None
    after = parts[2].bias.detach().reshape(-1) if len(parts) == 3 else None
    return bias, prelu.weight.detach().reshape(-1), after

_BYTE_TO_PM1 = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).float() * 2 - 1  # [256, 8]


def unpack_words(w_bits: Tensor, channels: int) -> Tensor:
    """+-1 float32 weight [O, channels, kh, kw] (a permuted view) from packed words [O, kh, kw, K].

    One table lookup per byte (8 weights), several times faster than bit masking at every call.
    """
    o, kh, kw, k = w_bits.shape
    pm1 = F.embedding(w_bits.view(torch.uint8).reshape(-1).int(), _BYTE_TO_PM1)
    return pm1.view(o, kh, kw, k * 64)[..., :channels].permute(0, 3, 1, 2)


def weight_levels(encoding: str, parts: Mapping[str, Tensor], out_channels: int) -> tuple[Tensor, Tensor | None]:
    """``(half, mid)`` per output channel: the binarized weight is ``half[o] * (+-1) + mid[o]`` (mid None = 0)."""
    if encoding == "sign":
        return torch.ones(out_channels), None
    if encoding == "scaled_sign":
        return parts["scale"].float(), None
    if encoding == "two_level":
        hi, lo = parts["hi"].float(), parts["lo"].float()
        return (hi - lo) / 2, (hi + lo) / 2
    raise ValueError(f"unknown binary weight encoding {encoding!r}")


def _fold_norm(unit: nn.Module, out_channels: int) -> tuple[Tensor, Tensor]:
    """BN (eval) and the conv bias as ``y = s * conv + t`` per output channel."""
    bias = unit.bias.detach().float() if unit.bias is not None else torch.zeros(out_channels)
    bn = unit.norm
    if bn is None:
        return torch.ones(out_channels), bias
    s = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    return s, bn.bias.detach().float() + (bias - bn.running_mean.float()) * s


class NativeBinaryConv2d(nn.Module):
    """Inference-only binary conv unit on 1-bit weights held once (see the module docstring for the formula)."""

    input_bits = 1
    weight_bits = 1
    is_binary = True

    def __init__(self, unit: BinaryConv2d, encoding: str, parts: Mapping[str, Tensor], name: str) -> None:
        super().__init__()
        out_channels, cg, kh, kw = unit.weight.shape
        self.name = name
        self.in_channels, self.out_channels, self.groups = unit.in_channels, out_channels, unit.groups
        self.kernel_size, self.stride, self.padding = tuple(unit.kernel_size), tuple(unit.stride), tuple(unit.padding)
        self.bypass = unit.bypass
        self.weight_offset = encoding == "two_level"  # AdaBin's weights: half * (+-1) + mid
        self.activation = INPUTS[type(unit.activation_binarizer)](unit.activation_binarizer)
        #: a ReLU that follows the unit, fused into its epilogue by :func:`fuse_relus`
        self.relu = False
        #: a PReLU-type activation that follows the unit (:func:`prelu_parts`), fused by :func:`fuse_relus`
        self.register_buffer("act_bias", None)
        self.register_buffer("act_slope", None)
        self.register_buffer("act_bias2", None)
        #: hand the sums of the output planes to the next unit (a DAB threshold's mean), set by :func:`to_native`
        self.emit_sums = False
        signs = unpack_signs(parts["signs"], [out_channels, cg, kh, kw])
        pm1 = signs.float() * 2 - 1
        self.weight_shape = (out_channels, cg, kh, kw)
        # exactly one copy of the weights: the file's 1-bit bytes (depthwise: one input channel per word would waste
        # 63 of 64 bits), the packed words (float path) or the kernels' layout (popcount path, not a buffer)
        self.register_buffer("w_signs", parts["signs"].clone() if self.depthwise else None)
        words = native.pack_weights(pm1) if not self.depthwise else None
        self.register_buffer("w_bits", words if self.float_path and not self.depthwise else None)
        self.weights: native.PreparedWeights | None = (
            None if self.float_path or self.depthwise else self._prepare(words)
        )
        half, mid = weight_levels(encoding, parts, out_channels)
        s, t = _fold_norm(unit, out_channels)
        self.register_buffer("out_scale", (s * half).contiguous())
        self.register_buffer("out_bias", t.contiguous())
        # AdaBin: the weight offset mid[o] meets the box sum of the activation; the activation offset meets the
        # per-tap sum of the +-1 weights (both exact at the borders, where the model pads with zeros)
        self.register_buffer("mid_scale", (s * mid).contiguous() if mid is not None else None)
        offset = isinstance(unit.activation_binarizer, AdaBinActivation)
        taps = pm1.sum(dim=1, keepdim=True) * (s * half).view(-1, 1, 1, 1) if offset else None
        self.register_buffer("tap_sums", taps)

    @property
    def depthwise(self) -> bool:
        return self.groups == self.in_channels == self.out_channels

    @property
    def sign_depthwise(self) -> bool:
        """Whether the unit runs :func:`bindense.native.sign_depthwise_conv2d` (depthwise, from the float input).

        Its activation must be a threshold sign: ``sign`` (0), RSign (``-bias``) or DAB (``k mean(x) + b``; its
        scale per (sample, channel) or group factors out of a depthwise conv), mapping 0 to +1; one weight level
        per channel (no AdaBin offset). Other depthwise units take the float path.
        """
        act = self.activation.binarizer
        return (self.depthwise and type(act) in (SignActivation, RSign, DAB)
                and getattr(act, "sign_zero", "plus") == "plus" and not self.weight_offset and native.available())

    @property
    def float_path(self) -> bool:
        """Whether the unit runs as an exact float conv of its binarized input with the unpacked +-1 weights.

        Per-channel DAB outside a depthwise conv needs it (a weighted binary conv). Depthwise convs take it too:
        with one input channel per output there is no channel dimension to pack, and torch's float depthwise conv
        measured several times faster than the packed depthwise kernel (docs/DEPLOY.md section 7).
        """
        dab = self.activation.binarizer
        if self.depthwise:
            return not self.sign_depthwise
        return isinstance(dab, DAB) and dab.group_size is None

    @property
    def channel_group_size(self) -> int | None:
        """DAB's channel group size (grouped DAB), passed to the kernel with the per-group scales."""
        return self.activation.binarizer.group_size if isinstance(self.activation.binarizer, DAB) else None

    def _prepare(self, words: Tensor) -> native.PreparedWeights:
        return native.prepare_weights(words, self.in_channels, self.kernel_size, self.groups, self.channel_group_size)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        """The state dict holds the portable packed words ``w_bits`` (not the ISA layout) for every unit."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.weights is not None:
            destination[prefix + "w_bits"] = self.weights.words()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        if self.weights is not None:
            if prefix + "w_bits" in state_dict:
                self.weights = self._prepare(state_dict.pop(prefix + "w_bits").contiguous())
            elif strict:
                missing_keys.append(prefix + "w_bits")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def pm1_weight(self, scale: Tensor | None = None) -> Tensor:
        """The +-1 float weight (times ``scale[o]`` if given), unpacked from the packed storage at each call (weights
        stay packed), written once into standard strides: the permuted view of a 1x1 weight counts as contiguous
        but its strides send torch's conv down a channels-last path (3x slower for 1x1 384->96 at 120x120)."""
        if self.w_signs is None and scale is not None:  # one native pass (pure torch without the extension)
            words = self.w_bits if self.weights is None else self.weights.words()
            return native.unpack_weights_scaled(words, self.in_channels // self.groups, scale)
        if self.w_signs is not None:
            pm1 = unpack_signs(self.w_signs, list(self.weight_shape)).float().mul_(2).sub_(1)
        else:
            words = self.w_bits if self.weights is None else self.weights.words()
            pm1 = unpack_words(words, self.in_channels // self.groups)
        out = torch.empty(self.weight_shape)
        if scale is None:
            return out.copy_(pm1)
        return torch.mul(pm1, scale.view(-1, 1, 1, 1), out=out)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, bypass={self.bypass}"
        )

    @property
    def prelu(self) -> tuple[Tensor | None, Tensor | None, Tensor | None] | None:
        """The fused PReLU-type activation as ``(bias, slope, bias_after)`` (None: none fused)."""
        if self.act_bias is None and self.act_slope is None and self.act_bias2 is None:
            return None
        return self.act_bias, self.act_slope, self.act_bias2

    def fuse_activation(self, act: nn.Module) -> bool:
        """Fold ``act`` (applied straight to this unit's output) into the epilogue; False if it cannot be."""
        if self.relu or self.prelu is not None:
            return False
        if type(act) is nn.ReLU:
            self.relu = True
            return True
        parts = prelu_parts(act)
        if parts is None:
            return False
        for name, v in zip(("act_bias", "act_slope", "act_bias2"), parts):
            if v is not None:
                setattr(self, name, v.float().expand(self.out_channels).clone())
        return True

    def fused_activation(self, y: Tensor) -> Tensor:
        """The activations fused into this unit applied to ``y`` in torch (the unfused model's ops)."""
        bias, slope, after = self.prelu or (None, None, None)
        y = y + bias.view(1, -1, 1, 1) if bias is not None else y
        y = F.prelu(y, slope) if slope is not None else y
        y = y + after.view(1, -1, 1, 1) if after is not None else y
        return y.clamp_min(0) if self.relu else y

    def _emit(self, y: Tensor, sums: Tensor | None) -> Tensor:
        if sums is not None:
            setattr(y, CHANNEL_SUMS, sums)
        return y

    def _sums(self, x: Tensor) -> Tensor | None:
        return torch.empty(x.shape[0], self.out_channels, dtype=torch.float64) if self.emit_sums else None

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, f"unit {self.name!r}")
        x = x.contiguous()
        if self.sign_depthwise:
            return self._sign_depthwise(x)
        if self.float_path:  # AdaBin's offset is inside the dense activation
            act = self.activation.binarizer
            if type(act) is DAB and act.group_size is None and act.sign_zero == "plus" and native.available():
                dense = native.dab_dense(x, dab_threshold(act, x), act.a)[0]  # 2 passes instead of DAB's 5
            else:
                dense = self.activation.dense(x)
            inp = BinaryInput(dense=dense)
        else:
            inp = self.activation(x, self.mid_scale is not None)
        residual = self._residual(x, inp)
        if inp.bits is None:  # exact float conv of the binarized input with the unpacked +-1 weights
            # out_scale folded into the +-1 weights (each product rounds once, as scale * S did) and out_bias
            # as the conv's bias: the conv writes the epilogue's result, no extra pass
            w = self.pm1_weight(self.out_scale)
            y = F.conv2d(inp.dense, w, self.out_bias, self.stride, self.padding, 1, self.groups).contiguous()
            if self._cfb_in_epilogue(inp):  # the bypass (CFB tiled / merged), activation and sums in one pass
                sums = self._sums(x)
                return self._emit(native.epilogue_(y, residual, self.prelu, self.relu, sums), sums)
            y = y if residual is None else y.add_(residual)
            return self.fused_activation(y)
        out_scale = self.out_scale if inp.scale is None else (self.out_scale * inp.scale.detach()).contiguous()
        sums = self._sums(x)
        return self._emit(native.binary_conv2d(
            inp.bits,
            self.weights,
            self.in_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.groups,
            channel_group_size=inp.group_size,
            group_scale=inp.group_scale,
            out_scale=out_scale,
            out_bias=self.out_bias,
            residual=residual,
            relu=self.relu,
            prelu=self.prelu,
            channel_sums=sums,
        ), sums)

    def _sign_depthwise(self, x: Tensor) -> Tensor:
        """Depthwise unit in one native pass per plane: signs, DAB's statistic, 7x7 sums, epilogue."""
        act = self.activation.binarizer
        threshold, dab_a, channel_scale = None, None, None
        if isinstance(act, RSign):
            threshold = act.bias.detach().reshape(-1).neg().contiguous()  # x - (-bias) == x + bias exactly
        elif isinstance(act, DAB) and act.group_size is None:
            threshold, dab_a = dab_threshold(act, x), act.a.detach()
        elif isinstance(act, DAB):  # grouped: the statistic spans several planes, one read-only pass first
            threshold = dab_threshold(act, x)
            per_group = act.group_alpha_from(native.abs_sums(x, threshold) / (x.shape[2] * x.shape[3])).detach()
            channel_scale = per_group.repeat_interleave(act.group_size, dim=1)[:, : self.in_channels]
        signs = unpack_signs(self.w_signs, list(self.weight_shape)).to(torch.int8).mul_(2).sub_(1)
        sums = self._sums(x) if self.prelu is None else None
        y, _ = native.sign_depthwise_conv2d(
            x, signs, self.kernel_size, self.stride, self.padding, threshold=threshold, dab_a=dab_a,
            out_scale=self.out_scale, out_bias=self.out_bias, residual=self._residual(x, BinaryInput()),
            relu=self.relu and self.prelu is None, channel_scale=channel_scale, channel_sums=sums,
        )
        return self._emit(y, sums) if self.prelu is None else self.fused_activation(y)

    def _cfb_in_epilogue(self, inp: BinaryInput) -> bool:
        """Whether the epilogue adds the raw CFB shortcut itself (no AdaBin correction maps to add beside it)."""
        return inp.offset is None and self.mid_scale is None

    def _box_sum(self, a: Tensor) -> Tensor:
        """Sum of ``a`` over each output's window (zero padded) and the input channels of its group."""
        n, c, h, w = a.shape
        per_group = a.view(n, self.groups, c // self.groups, h, w).sum(dim=2)
        ones = a.new_ones(self.groups, 1, *self.kernel_size)
        box = F.conv2d(per_group, ones, None, self.stride, self.padding, 1, self.groups)
        return box.repeat_interleave(self.out_channels // self.groups, dim=1)

    def _residual(self, x: Tensor, inp: BinaryInput) -> Tensor | None:
        """The bypass plus AdaBin's offset corrections, float32 [N, O, Ho, Wo] (None when there is none)."""
        terms = []
        if self.bypass == "cfb":
            ho = (x.shape[2] + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
            wo = (x.shape[3] + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
            shortcut = (
                x if (ho, wo) == tuple(x.shape[-2:]) else F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)
            )
            # CFB's tiled copies / merged channels of x: the kernel (or native.epilogue_) reads the shortcut itself
            terms.append(shortcut if self._cfb_in_epilogue(inp) else cfb(shortcut, self.out_channels))
        if inp.offset is not None:
            ones = x.new_ones(1, 1, *x.shape[-2:])
            terms.append(F.conv2d(ones, self.tap_sums, None, self.stride, self.padding) * inp.offset.detach())
        if self.mid_scale is not None:
            terms.append(self._box_sum(inp.dense) * self.mid_scale.view(-1, 1, 1))
        if not terms:
            return None
        out = terms[0] if len(terms) == 1 else sum(terms[1:], terms[0])
        return out.float().contiguous()


def check_input(x: Any, channels: int, where: str, layout: str = "N, C, H, W", kind: str = "") -> None:
    """Raise a clear error unless ``x`` is a float32 tensor shaped ``layout`` whose ``C`` is ``channels``
    (``kind``, e.g. ``"tokens"``, names what the tensor holds in the message)."""
    dims = [d.strip() for d in layout.split(",")]
    shape = ", ".join(str(channels) if d == "C" else d for d in dims)
    expected = f"a float32 tensor [{shape}]" + (f" of {kind}" if kind else "")
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: expected {expected}, got {type(x).__name__}")
    if x.dtype != torch.float32 or x.dim() != len(dims) or x.shape[dims.index("C")] != channels:
        raise ValueError(
            f"{where}: expected {expected} ({channels}: the channel count of the export), got {x.dtype} {list(x.shape)}"
        )


class NativeModel(nn.Module):
    """A loaded export on the native runtime: checks the input, then runs the model (outputs unchanged)."""

    def __init__(self, model: nn.Module, in_channels: int) -> None:
        super().__init__()
        self.model = model
        self.in_channels = in_channels

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        check_input(x, self.in_channels, "load_packed(runtime='native') model input")
        if not x.is_contiguous():
            raise ValueError(
                "load_packed(runtime='native') model input: expected a contiguous tensor (NCHW, "
                "torch.contiguous_format); call x.contiguous() first"
            )
        return self.model(x, *args, **kwargs)


def supports(unit: nn.Module) -> bool:
    """Whether ``unit`` runs on the native kernels: a binary ``BinaryConv2d`` with zero padding, no dilation."""
    return (
        type(unit) is BinaryConv2d
        and type(unit.activation_binarizer) in INPUTS
        and tuple(unit.dilation) == (1, 1)
        and unit.padding_mode == "zeros"
        and isinstance(unit.padding, tuple)
    )


def to_native(
    model: nn.Module,
    binary: Mapping[str, Mapping[str, Any]],
    replace: Callable[[nn.Module, nn.Module, nn.Module], int],
) -> NativeModel:
    """Swap every supported binary unit of a loaded model for :class:`NativeBinaryConv2d` (linears and transposed
    convs: :mod:`bindense.export.runtime_dpt`) and wrap the model."""
    from bindense.export.runtime_dpt import native_attention, native_unit

    for entry in binary.values():
        unit = model.get_submodule(entry["module"])
        if supports(unit):
            replace(model, unit, NativeBinaryConv2d(unit, entry["encoding"], entry["parts"], entry["module"]))
        elif (other := native_unit(unit, entry)) is not None:
            replace(model, unit, other)
    native_attention(model, replace)  # binary ViT attention: integer scores, no softmax (where exact)
    fuse_relus(model)
    units = [m for m in model.modules() if isinstance(m, NativeBinaryConv2d)]
    if any(isinstance(m.activation.binarizer, DAB) for m in units):  # DAB thresholds take the handed-over sums
        for m in units:
            m.emit_sums = True
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d | NativeBinaryConv2d)), None)
    return NativeModel(model, first.in_channels if first is not None else 3)


def _relu_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """``(parent, unit attribute, ReLU attribute)`` where ``parent`` applies the ReLU straight to the unit's output:
    consecutive children of an ``nn.Sequential``, and the heads listed in :data:`RELU_AFTER`."""
    pairs = []
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            names = [n for n, _ in parent.named_children()]
            pairs += [(parent, a, b) for a, b in zip(names, names[1:])]
        elif type(parent) in RELU_AFTER:
            pairs.append((parent, *RELU_AFTER[type(parent)]))
    return pairs


def fuse_relus(model: nn.Module) -> int:
    """Fold every ``nn.ReLU`` or PReLU-type activation (:func:`prelu_parts`) applied directly to a native unit's
    output into the unit's epilogue (the activation becomes ``nn.Identity``); returns how many. A shared unit or
    activation (several positions) is never fused."""
    counts: dict[int, int] = {}
    for m in model.modules():
        for child in m._modules.values():  # with repeats: a shared module is listed at each of its positions
            if child is None:
                continue
            counts[id(child)] = counts.get(id(child), 0) + 1
    fused = 0
    for parent, unit_name, act_name in _relu_pairs(model):
        unit, act = getattr(parent, unit_name), getattr(parent, act_name)
        if (isinstance(unit, NativeBinaryConv2d) and counts[id(unit)] == 1 and counts.get(id(act)) == 1
                and unit.fuse_activation(act)):
            setattr(parent, act_name, nn.Identity())
            fused += 1
    return fused


def prepared_units(module: nn.Module) -> list[nn.Module]:
    """``module``'s native units on the popcount path (those holding :class:`bindense.native.PreparedWeights`)."""
    return [m for m in module.modules() if isinstance(getattr(m, "weights", None), native.PreparedWeights)]


def prepared_weight_bytes(module: nn.Module) -> int:
    """Bytes of the kernel-layout weights held by ``module``'s units on the popcount path (made at load; the
    only copy of those weights)."""
    return sum(m.weights.nbytes for m in prepared_units(module))


def resident_bytes(module: nn.Module) -> int:
    """Bytes that stay in memory for ``module``: the distinct storages of its parameters, buffers and the
    kernel-layout weights of its native units (:func:`prepared_weight_bytes`)."""
    tensors = list(module.parameters()) + list(module.buffers()) + [m.weights.data for m in prepared_units(module)]
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values())
