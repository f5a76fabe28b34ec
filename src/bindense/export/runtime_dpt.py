"""The native runtime's units for the DPT + ViT model: ``BinaryLinear`` (the ViT's qkv, proj, fc1, fc2) and
``BinaryConvTranspose2d`` with kernel == stride (DPT's Up x4 and Up x2), docs/DEPLOY.md section 5.

**Linears.** A binary linear over tokens is a 1x1 binary conv over ``[B, C, 1, T]`` (one image row of T
pixels, so that the kernel's pixel tiles fill up): the tokens are packed 64
channels per word (``x - threshold >= 0``, the activation binarizer's threshold as for the convs) and the native
1x1 conv computes ``y = out_scale[o] * S + out_bias[o] + residual`` with ``S`` the exact popcount sum,
``out_scale`` = the weight scale (x a scalar activation scale) and ``out_bias`` the linear's bias. The result is
returned as a ``(B, T, O)`` view of the kernel's ``[B, O, 1, T]`` output; elementwise ops after it (GELU) keep
that layout, so the next linear reads its input without a copy.

**Transposed convs** with kernel == stride: each output pixel receives exactly one tap of every input channel,
so the unit is one 1x1 conv with ``kh * kw * O`` outputs (one per tap, weights laid out once at load), whose
epilogue already holds BN, the bias and the bypass (the nearest-upsampled CFB shortcut is the same for every
tap, so the kernel reads it tiled at the input resolution); one copy interleaves the taps into the upsampled
image. Popcount needs the weight scale per *output* channel (``method.transpose_scale=output``): with the
authors' per-input-channel scale (the default, ``transpose_scale=input``), or per-channel DAB, or AdaBin's
offsets, the input channels carry different weights and the unit is a weighted binary GEMM, which runs as an
exact float ``conv_transpose2d`` of the binarized input with the +-1 weights unpacked from their bits at each
call (the "float path", like per-channel DAB in the convs).

Which activation binarizers pack (popcount path): ``sign`` and ``bivit`` (the same forward value), ``rsign``,
``bisr``, ``adabin`` (scalar scale in ``out_scale``, its offsets as exact correction terms) and grouped DAB
(``dab_groups``: one scale per (sample, group), applied by the kernel per group). Per-channel DAB is the
float path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindense import native
from bindense.binary import BinaryConvTranspose2d, BinaryLinear, cfb
from bindense.binary.binarizers import (
    DAB,
    AdaBinActivation,
    BiSRActivation,
    BiViTSignActivation,
    RSign,
    SignActivation,
)
from bindense.export.bits import unpack_signs
from bindense.export.inputs import INPUTS, BinaryInput
from bindense.export.packed import decode_binary_weight
from bindense.export.runtime import _fold_norm, check_input, unpack_words, weight_levels

# ------------------------------------------------------------------------------------------------ token inputs


def _as_channels(x: Tensor) -> Tensor:
    """``(B, T, C)`` tokens as the ``[B, C, 1, T]`` map the packing kernel reads (a view; no copy when the
    tokens are already laid out channel-major, e.g. after a previous native linear)."""
    return x.transpose(1, 2).unsqueeze(2)


def _sign_tokens(act: nn.Module, x: Tensor, need_dense: bool) -> BinaryInput:
    return BinaryInput(bits=native.pack_activations(_as_channels(x)))


def _rsign_tokens(act: RSign, x: Tensor, need_dense: bool) -> BinaryInput:
    threshold = act.bias.detach().reshape(-1).neg().contiguous()  # x - (-bias) == x + bias exactly
    return BinaryInput(bits=native.pack_activations(_as_channels(x), threshold))


def _bisr_tokens(act: BiSRActivation, x: Tensor, need_dense: bool) -> BinaryInput:
    z = act.k * x + act.b  # the binarizer's own ops in the token layout: bit-identical signs
    return BinaryInput(bits=native.pack_activations(_as_channels(z)))


def _adabin_tokens(act: AdaBinActivation, x: Tensor, need_dense: bool) -> BinaryInput:
    alpha, beta = act.alpha.detach(), act.beta.detach()
    bits = native.pack_activations(_as_channels((x - beta) / alpha))
    return BinaryInput(bits=bits, scale=alpha, offset=alpha * beta, dense=act(x))


def token_dab_threshold(dab: DAB, x: Tensor) -> Tensor:
    """DAB's threshold over tokens ``k mean_T(x) + b``, [B, C], with the ops of :meth:`DAB.centred` (bit-identical)."""
    return (dab.k * x.mean(dim=1, keepdim=True) + dab.b).reshape(x.shape[0], x.shape[2]).contiguous()


def _dab_tokens(act: DAB, x: Tensor, need_dense: bool) -> BinaryInput:
    """Grouped DAB over tokens: its signs and ``mean|s|`` (summed by the packing pass), one scale per group."""
    bits, abs_sums = native.pack_activations_stats(_as_channels(x), token_dab_threshold(act, x))
    scale = act.group_alpha_from(abs_sums / x.shape[1]).detach().contiguous()
    return BinaryInput(bits=bits, group_size=act.group_size, group_scale=scale)


#: activation binarizer type -> packing of ``(B, T, C)`` tokens (``bivit`` has the forward value of ``sign``; only
#: its straight-through window differs). Per-channel DAB is absent: a weighted binary GEMM, the float path.
TOKEN_INPUTS: dict[type[nn.Module], Callable[[Any, Tensor, bool], BinaryInput]] = {
    SignActivation: _sign_tokens,
    BiViTSignActivation: _sign_tokens,
    RSign: _rsign_tokens,
    BiSRActivation: _bisr_tokens,
    AdaBinActivation: _adabin_tokens,
    DAB: _dab_tokens,
}

#: activation binarizer type -> the conv-layout packing adapter (:data:`bindense.export.inputs.INPUTS`), bivit added
MAP_INPUTS = {**INPUTS, BiViTSignActivation: INPUTS[SignActivation]}


def _popcount_activation(act: nn.Module) -> bool:
    """Whether the binarizer's scale factors out of the sum over input channels (everything but per-channel DAB)."""
    return not (isinstance(act, DAB) and act.group_size is None)


def _dense(act: nn.Module, x: Tensor) -> Tensor:
    """The binarized activation exactly as the unpacked unit computes it (per-channel DAB of a map: 2 native passes)."""
    if (
        type(act) is DAB
        and act.group_size is None
        and not act.channels_last
        and act.sign_zero == "plus"
        and native.available()
    ):
        thr = (act.k * x.mean(dim=(2, 3), keepdim=True) + act.b).reshape(x.shape[:2]).contiguous()
        return native.dab_dense(x, thr, act.a)[0]
    return act(x)


class _PreparedUnit(nn.Module):
    """State-dict handling of a unit whose popcount weights live only in the kernels' layout (``weights``): the
    state dict holds the portable packed words ``w_bits`` instead, and loading one lays it out again."""

    input_bits = 1
    weight_bits = 1
    is_binary = True
    #: a ReLU after the unit is never fused into these units (the DPT/ViT has none straight after them)
    relu = False

    def fused_activation(self, y: Tensor) -> Tensor:
        """The activation fused into the unit's epilogue, applied to a reference output: none here."""
        return y

    weights: native.PreparedWeights | None  # each subclass lays its words out with its own ``_prepare``

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.weights is not None:
            destination[prefix + "w_bits"] = self.weights.words()

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        if self.weights is not None:
            if prefix + "w_bits" in state_dict:
                self.weights = self._prepare(state_dict.pop(prefix + "w_bits").contiguous())
            elif strict:
                missing_keys.append(prefix + "w_bits")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


# ------------------------------------------------------------------------------------------------- the linear


class NativeBinaryLinear(_PreparedUnit):
    """Inference-only binary linear on ``(B, T, C)`` tokens: a native 1x1 popcount conv over ``[B, C, 1, T]``
    with the weight scale and bias in its epilogue (per-channel DAB: an exact float linear, weights unpacked)."""

    def __init__(self, unit: BinaryLinear, encoding: str, parts: Mapping[str, Tensor], name: str) -> None:
        super().__init__()
        out_features, in_features = unit.weight.shape
        self.name, self.in_channels, self.out_channels = name, in_features, out_features
        self.bypass = unit.bypass
        self.binarizer = unit.activation_binarizer
        pm1 = unpack_signs(parts["signs"], [out_features, in_features]).float().mul_(2).sub_(1)
        half, mid = weight_levels(encoding, parts, out_features)
        self.register_buffer("out_scale", half.contiguous())
        bias = unit.bias.detach().float() if unit.bias is not None else torch.zeros(out_features)
        self.register_buffer("out_bias", bias.contiguous())
        # AdaBin: the weight offset mid[o] meets the token's sum of A(x); the activation offset the row sums of w
        self.register_buffer("mid_scale", mid.contiguous() if mid is not None else None)
        offset = isinstance(self.binarizer, AdaBinActivation)
        self.register_buffer("row_sums", (pm1.sum(dim=1) * half).contiguous() if offset else None)
        words = native.pack_weights(pm1.view(out_features, in_features, 1, 1))
        self.register_buffer("w_bits", words if self.float_path else None)
        self.weights = None if self.float_path else self._prepare(words)

    @property
    def float_path(self) -> bool:
        """Per-channel DAB: a weighted binary GEMM (exact float linear); everything else is a popcount GEMM."""
        return not _popcount_activation(self.binarizer)

    @property
    def profile_kind(self) -> str:
        return f"linear (tokens) {'float path' if self.float_path else 'popcount'}"

    def _prepare(self, words: Tensor) -> native.PreparedWeights:
        group = self.binarizer.group_size if isinstance(self.binarizer, DAB) else None
        return native.prepare_weights(words, self.in_channels, 1, 1, group)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, bypass={self.bypass}, float_path={self.float_path}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, f"unit {self.name!r}", "B, T, C", "tokens")
        if self.float_path:
            words = self.w_bits.view(self.out_channels, 1, 1, -1)
            w = unpack_words(words, self.in_channels).reshape(self.out_channels, self.in_channels)
            y = F.linear(self.binarizer(x), w * self.out_scale.view(-1, 1), self.out_bias)
            return y if self.bypass == "none" else y + cfb(x.movedim(-1, 1), self.out_channels).movedim(1, -1)
        inp = TOKEN_INPUTS[type(self.binarizer)](self.binarizer, x, False)
        b, t, _ = x.shape
        residual = self._residual(x, inp)
        out_scale = self.out_scale if inp.scale is None else (self.out_scale * inp.scale.detach()).contiguous()
        y = native.binary_conv2d(
            inp.bits, self.weights, self.in_channels, 1, channel_group_size=inp.group_size,
            group_scale=inp.group_scale, out_scale=out_scale, out_bias=self.out_bias, residual=residual,
        )  # fmt: skip
        return y.view(b, self.out_channels, t).transpose(1, 2)

    def _residual(self, x: Tensor, inp: BinaryInput) -> Tensor | None:
        """The bypass plus AdaBin's offset terms as a ``[B, O, 1, T]`` map (None when there is none)."""
        terms = []
        if self.bypass == "cfb":
            terms.append(cfb(_as_channels(x), self.out_channels))
        if inp.offset is not None:  # alpha * beta * half[o] * sum_c w[o, c], the same for every token
            terms.append((self.row_sums * inp.offset.detach()).view(1, -1, 1, 1).expand(x.shape[0], -1, 1, x.shape[1]))
        if self.mid_scale is not None:  # mid[o] * sum_c A(x)[t, c]
            terms.append(self.mid_scale.view(1, -1, 1, 1) * inp.dense.sum(dim=-1).view(x.shape[0], 1, 1, -1))
        if not terms:
            return None
        return sum(terms[1:], terms[0]).float().contiguous()


# --------------------------------------------------------------------------------------- the transposed conv


class NativeBinaryConvTranspose2d(_PreparedUnit):
    """Inference-only binary transposed conv with kernel == stride (DPT's Up): one native 1x1 conv with one
    output per (tap, channel) and the epilogue fused, then the taps interleaved (see the module docstring)."""

    def __init__(
        self, unit: BinaryConvTranspose2d, encoding: str, parts: Mapping[str, Tensor], name: str, channel_dim: int
    ) -> None:
        super().__init__()
        cin, cout, kh, kw = unit.weight.shape
        self.name, self.in_channels, self.out_channels = name, cin, cout
        self.kernel_size, self.stride = (kh, kw), tuple(unit.stride)
        self.bypass = unit.bypass
        self.binarizer = unit.activation_binarizer
        self.activation = MAP_INPUTS[type(self.binarizer)](self.binarizer)
        s, t = _fold_norm(unit, cout)
        # the scale per output channel factors out of the sum over input channels; per input channel it does not
        per_output = encoding == "sign" or (encoding == "scaled_sign" and channel_dim == 1)
        self.popcount = (
            per_output and _popcount_activation(self.binarizer) and not isinstance(self.binarizer, AdaBinActivation)
        )
        self.channel_dim, self.encoding = channel_dim, encoding
        self.register_buffer("out_bias", t.contiguous())
        if self.popcount:
            half = parts["scale"].float() if encoding == "scaled_sign" else torch.ones(cout)
            self.register_buffer("out_scale", (s * half).contiguous())
            pm1 = unpack_signs(parts["signs"], [cin, cout, kh, kw]).float().mul_(2).sub_(1)
            for key in ("w_signs", "w_scale", "w_hi", "w_lo"):
                self.register_buffer(key, None)
            self.weights = self._prepare(tap_words(pm1))
        else:  # float path: the file's 1-bit bytes and the scale of the binarized weight, BN folded at each call
            self.register_buffer("out_scale", s.contiguous())
            self.register_buffer("w_signs", parts["signs"].clone())
            for key in ("scale", "hi", "lo"):
                self.register_buffer(f"w_{key}", parts[key].float().clone() if key in parts else None)
            self.weights = None

    @property
    def float_path(self) -> bool:
        return not self.popcount

    @property
    def profile_kind(self) -> str:
        kh, kw = self.kernel_size
        return f"transposed {kh}x{kw}/{self.stride[0]} {'popcount' if self.popcount else 'float path'}"

    def _prepare(self, words: Tensor) -> native.PreparedWeights:
        group = self.binarizer.group_size if isinstance(self.binarizer, DAB) else None
        return native.prepare_weights(words, self.in_channels, 1, 1, group)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"bypass={self.bypass}, popcount={self.popcount}"
        )

    def binarized_weight(self) -> Tensor:
        """The float path's weight ``[C_in, C_out, kh, kw]``: the decoded binarized weight times the BN scale."""
        shape = [self.in_channels, self.out_channels, *self.kernel_size]
        parts = {"signs": self.w_signs, "scale": self.w_scale, "hi": self.w_hi, "lo": self.w_lo}
        wb = decode_binary_weight(self.encoding, parts, shape, self.channel_dim, torch.float32)
        return wb * self.out_scale.view(1, -1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, f"unit {self.name!r}")
        x = x.contiguous()
        n, _, h, w = x.shape
        (kh, kw), o = self.kernel_size, self.out_channels
        if not self.popcount:
            y = F.conv_transpose2d(_dense(self.binarizer, x), self.binarized_weight(), self.out_bias, self.stride)
            return y if self.bypass == "none" else y.add_(self._shortcut(x, y.shape[-2:]))
        inp = self.activation(x, False)
        taps = kh * kw
        # the CFB shortcut is constant over the taps of a pixel: the kernel reads it tiled over the tap outputs
        residual = None if self.bypass == "none" else (x if o % self.in_channels == 0 else cfb(x, o).contiguous())
        out_scale = self.out_scale if inp.scale is None else self.out_scale * inp.scale.detach()
        s = native.binary_conv2d(
            inp.bits, self.weights, self.in_channels, 1, channel_group_size=inp.group_size,
            group_scale=inp.group_scale, out_scale=out_scale.repeat(taps), out_bias=self.out_bias.repeat(taps),
            residual=residual,
        )  # fmt: skip
        return s.view(n, kh, kw, o, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, o, h * kh, w * kw)

    def _shortcut(self, x: Tensor, size: torch.Size) -> Tensor:
        return cfb(F.interpolate(x, size=size, mode="nearest"), self.out_channels)


def tap_words(pm1: Tensor) -> Tensor:
    """Packed words ``[kh * kw * O, 1, 1, ceil(C/64)]`` of a ``[C, O, kh, kw]`` +-1 transposed-conv weight: one
    1x1 output per (tap, output channel), taps outermost."""
    cin, cout, kh, kw = pm1.shape
    words = native.pack_weights(pm1.permute(1, 0, 2, 3))  # [O, kh, kw, K]
    return words.permute(1, 2, 0, 3).reshape(kh * kw * cout, 1, 1, -1).contiguous()


# ---------------------------------------------------------------------------------------------- registration


def _linear(unit: nn.Module, entry: Mapping[str, Any]) -> nn.Module | None:
    if type(unit) is not BinaryLinear or type(unit.activation_binarizer) not in TOKEN_INPUTS:
        return None
    return NativeBinaryLinear(unit, entry["encoding"], entry["parts"], entry["module"])


def _transposed(unit: nn.Module, entry: Mapping[str, Any]) -> nn.Module | None:
    ok = (
        type(unit) is BinaryConvTranspose2d
        and type(unit.activation_binarizer) in MAP_INPUTS
        and tuple(unit.kernel_size) == tuple(unit.stride)
        and tuple(unit.padding) == (0, 0)
        and tuple(unit.output_padding) == (0, 0)
        and tuple(unit.dilation) == (1, 1)
        and unit.groups == 1
    )
    if not ok:
        return None
    return NativeBinaryConvTranspose2d(unit, entry["encoding"], entry["parts"], entry["module"], entry["channel_dim"])


#: the token and up-sampling units of the native runtime, tried in order on every exported binary unit that is
#: not a ``BinaryConv2d``: ``factory(unit, file entry) -> native unit`` or None (the unit keeps the torch path)
NATIVE_FACTORIES: tuple[Callable[[nn.Module, Mapping[str, Any]], nn.Module | None], ...] = (_linear, _transposed)


def native_unit(unit: nn.Module, entry: Mapping[str, Any]) -> nn.Module | None:
    """The native replacement of a ``BinaryLinear`` / ``BinaryConvTranspose2d`` unit, or None if it has none."""
    for factory in NATIVE_FACTORIES:
        made = factory(unit, entry)
        if made is not None:
            return made
    return None


NATIVE_TOKEN_UNITS = (NativeBinaryLinear, NativeBinaryConvTranspose2d)


# ------------------------------------------------------------------------------------------------ attention

#: q/k binarizers whose forward values are exactly +-1 (so that q . k is an integer of the parity of the head dim)
PM1_BINARIZERS = (SignActivation, BiViTSignActivation, RSign, BiSRActivation)
#: smallest distance (in score units) between the threshold and a reachable score gap for the integer rule to be
#: safe against the float rounding of the unpacked model's softmax comparison
SCORE_MARGIN = 1e-3


class NativeAttention(nn.Module):
    """BiViT's binary attention at inference, without the softmax: the same selected keys, computed on integers.

    The model selects key j for query i where ``P_ij >= t * max_j P_ij`` with ``P = softmax(scale * q k^T)``.
    The softmax is monotonic and its row maximum is ``exp(0) / Z``, so this is ``scale * (D_max - D_ij) <= -ln t``
    with ``D = q k^T``; for +-1 q and k, ``D`` holds integers of the head dim's parity (exact in float32), so
    ``D_max - D_ij`` is even and the rule is ``D_max - D_ij <= gap`` with an even integer ``gap``. It is used
    only where every reachable gap lies at least :data:`SCORE_MARGIN` from the threshold (checked at load), where
    the model's float comparison cannot round the other way; then ``out = (A v) / count`` as the model (``A`` in
    {0, 1}). q, k, v are binarized by the model's own binarizers; qkv and proj are the model's (native) linears.
    """

    relu = False  # nothing fused after it (the interface of the runtime's units, for the per-unit checks)

    def fused_activation(self, y: Tensor) -> Tensor:
        return y

    def __init__(self, attention: nn.Module, gap: int) -> None:
        super().__init__()
        self.qkv, self.proj = attention.qkv, attention.proj
        self.q_binarizer, self.k_binarizer = attention.q_binarizer, attention.k_binarizer
        self.v_binarizer = attention.v_binarizer
        self.num_heads, self.normalize, self.gap = attention.num_heads, attention.normalize, gap

    @staticmethod
    def integer_gap(attention: nn.Module) -> int | None:
        """The largest selected ``D_max - D`` (an integer), or None where the integer rule does not apply."""
        binarizers = (attention.q_binarizer, attention.k_binarizer)
        if not attention.binary or not all(type(b) in PM1_BINARIZERS for b in binarizers):
            return None
        if any(getattr(b, "sign_zero", "plus") != "plus" for b in binarizers):
            return None
        limit = -torch.log(torch.tensor(float(attention.threshold), dtype=torch.float64)).item() / attention.scale
        head_dim = round(attention.scale**-2)  # the model's scale is head_dim ** -0.5
        gaps = torch.arange(0, 2 * head_dim + 1, 2, dtype=torch.float64)  # D_max - D: even (D has d's parity)
        if limit < 0 or (gaps - limit).abs().min().item() * attention.scale < SCORE_MARGIN:
            return None
        return int(gaps[gaps <= limit].max().item())

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, selected: D_max - D <= {self.gap}, normalize={self.normalize}"

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (
            binarize(t).reshape(b, n, self.num_heads, -1).transpose(1, 2)
            for binarize, t in ((self.q_binarizer, q), (self.k_binarizer, k), (self.v_binarizer, v))
        )
        scores = q @ k.transpose(-2, -1)  # integers, exact in float32
        # selected <=> scores - max + gap + 1 >= 1: the left side is odd (scores - max and gap are even), so the
        # clamp to [0, 1] gives exactly 1 or 0, in place
        selected = scores.sub_(scores.amax(dim=-1, keepdim=True) - (self.gap + 1)).clamp_(0, 1)
        if not self.normalize:
            out = selected @ v
        else:  # the count of selected keys as one more column of the same matmul
            out = selected @ torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)
            out = out[..., :-1] / out[..., -1:]
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def native_attention(model: nn.Module, replace: Callable[[nn.Module, nn.Module, nn.Module], int]) -> int:
    """Swap every binary ViT attention whose integer rule is exact (:meth:`NativeAttention.integer_gap`) for a
    :class:`NativeAttention`; returns how many."""
    from bindense.models.vit import Attention

    swapped = 0
    for module in [m for m in model.modules() if type(m) is Attention]:
        gap = NativeAttention.integer_gap(module)
        if gap is not None:
            swapped += replace(model, module, NativeAttention(module, gap)) > 0
    return swapped
