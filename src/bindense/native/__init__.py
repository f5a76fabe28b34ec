"""Bit-packed binary convolutions on the CPU: XNOR + popcount kernels in C++ with run-time ISA dispatch.

Bits: 1 where the value is >= 0 (sign(0) = +1), 0 where it is < 0; 64 channels per int64 word, bit j of word k =
channel 64k + j, unused high bits 0. Activations are packed NHWC ([N, H, W, ceil(C/64)]), weights
[O, kh, kw, ceil(Cg/64)]. Padding contributes 0 to every sum (as the zero-padded +-1 model does).

ISA paths (:func:`isa`): ``avx512`` (AVX-512 with VPOPCNTDQ), ``avx2`` (vpshufb popcount), ``generic`` (portable
C++), ``torch`` (no native build: the pure-torch oracle in :mod:`bindense.native.reference`). The best path this
CPU supports is used; ``BINDENSE_ISA=avx2|generic|torch`` (read at each call) or :func:`set_isa` forces a lower
one. docs/NATIVE.md describes the design.
"""

from __future__ import annotations

import os
import platform
import weakref
from dataclasses import replace

import torch

from bindense.native import build, reference
from bindense.native.checks import ConvSpec, check_conv, check_output, check_weights
from bindense.native.prepared import WORDS, PreparedWeights
from bindense.native.reference import pack_weights, unpack_activations, unpack_weights

__all__ = [
    "available", "cpu_name", "isa", "set_isa", "supported_isas", "pack_activations", "pack_weights",
    "unpack_activations", "unpack_weights", "prepare_weights", "PreparedWeights", "binary_conv2d",
    "binary_conv_transpose2d", "prepared_bytes", "ISAS", "abs_sums", "epilogue_", "unpack_weights_scaled",
]

ISAS = ("avx512", "avx2", "generic", "torch")  # best first
_forced: list[str | None] = [None]
_WEIGHT_CACHE: dict[int, tuple] = {}  # id(w_bits) -> (key, prepared layout); dropped when w_bits dies (plain
# w_bits arguments only: a PreparedWeights argument is its own and only copy)


def available() -> bool:
    """True when the C++ extension is built and loaded (compiles it on the first call)."""
    return build.extension() is not None


def supported_isas() -> list[str]:
    """The native ISA paths this CPU can run, best first (``["torch"]`` when there is no native build)."""
    ext = build.extension()
    return list(ext.cpu_isas()) if ext is not None else ["torch"]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the machine type: benchmarks record it beside their numbers,
    since the same command runs at different speeds on different CPUs (docs/TRAINING.md section 5)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_isa(name: str | None) -> None:
    """Force an ISA path for this process (``None``: back to ``BINDENSE_ISA`` / the best one)."""
    if name is not None:
        _validate(name, "set_isa")
    _forced[0] = name


def _validate(name: str, where: str) -> str:
    if name not in ISAS:
        raise ValueError(f"bindense.native: {where}={name!r} is not an ISA path; expected one of {list(ISAS)}")
    if name != "torch" and name not in supported_isas():
        raise ValueError(f"bindense.native: {where}={name!r} is not supported here; this CPU and build run "
                         f"{supported_isas()} (and 'torch')")
    return name


def isa() -> str:
    """The ISA path the next call uses: :func:`set_isa`, else ``$BINDENSE_ISA``, else the best supported."""
    if _forced[0] is not None:
        return _forced[0]
    env = os.environ.get("BINDENSE_ISA", "").strip()
    if env:
        return _validate(env, "BINDENSE_ISA")
    return supported_isas()[0]


def _check_pack_args(x: torch.Tensor, threshold: torch.Tensor | None, where: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.dtype != torch.float32:
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"bindense.native.{where}: x must be a float32 tensor [N, C, H, W], got {got}")
    n, c = x.shape[:2]
    if threshold is not None and (threshold.dtype != torch.float32 or tuple(threshold.shape) not in ((c,), (n, c))):
        raise ValueError(f"bindense.native.{where}: threshold must be float32 [{c}] or [{n}, {c}], got "
                         f"{threshold.dtype} {list(threshold.shape)}")


def pack_activations(x: torch.Tensor, threshold: torch.Tensor | None = None) -> torch.Tensor:
    """Pack float32 activations [N, C, H, W] into int64 [N, H, W, ceil(C/64)], bit = (x - threshold >= 0).

    ``threshold``: None (0), [C] (per channel) or [N, C] (per sample and channel, e.g. DAB's tau).
    """
    _check_pack_args(x, threshold, "pack_activations")
    n, c = x.shape[:2]
    ext = build.extension()
    if ext is None or isa() == "torch" or x.device.type != "cpu":
        return reference.pack_activations(x, threshold)
    thr = threshold.expand(n, c).contiguous() if threshold is not None else None
    return ext.pack_activations(x.contiguous(), thr)


def _prepared(ext, spec: ConvSpec, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights in the ISA's blocked layout, cached on the ``w_bits`` tensor (rebuilt if it is modified)."""
    w = spec.w_bits
    key = (name, spec.in_channels, spec.groups, spec.channel_group_size or 0, w._version)
    entry = _WEIGHT_CACHE.get(id(w))
    if entry is None or entry[0] != key:
        if entry is None:
            weakref.finalize(w, _WEIGHT_CACHE.pop, id(w), None)
        entry = (key, tuple(ext.prepare_weights(w, spec.in_channels, spec.groups, spec.channel_group_size or 0,
                                                name)))
        _WEIGHT_CACHE[id(w)] = entry
    return entry[1]


def prepare_weights(
    w_bits: torch.Tensor,
    in_channels: int,
    kernel_size: int | tuple[int, int],
    groups: int = 1,
    channel_group_size: int | None = None,
) -> PreparedWeights:
    """Lay packed weights out once for the ISA path in use (:func:`isa`): pass the result to :func:`binary_conv2d`
    in place of ``w_bits`` and drop ``w_bits``: the layout is then the weights' only copy (nothing is cached).

    ``channel_group_size`` must be the one the convs pass (DAB groups split the layout into segments). Depthwise
    weights and the ``torch`` path keep the words themselves. A call on another ISA path than the one prepared
    for re-lays the weights out for that call (correct, but slower: prepare again after :func:`set_isa`).
    """
    kh, kw = check_weights(w_bits, in_channels, kernel_size, groups, channel_group_size)
    name = isa()
    ext = build.extension() if name != "torch" else None
    out_channels = w_bits.shape[0]
    args = (in_channels, out_channels, (kh, kw), groups, channel_group_size)
    if ext is None or groups == in_channels == out_channels > 1:
        return PreparedWeights(WORDS, w_bits, *args)
    wt, _ = ext.prepare_weights(w_bits, in_channels, groups, channel_group_size or 0, name)  # tap popcounts: per call
    return PreparedWeights(name, wt, *args)


def prepared_bytes(w_bits: torch.Tensor) -> int:
    """Bytes of the cached ISA layout of ``w_bits`` (a second copy of the weights, built at its first conv; 0 if
    none): count it in a model's resident size."""
    entry = _WEIGHT_CACHE.get(id(w_bits))
    return sum(t.numel() * t.element_size() for t in entry[1]) if entry is not None else 0


def _epilogue_vectors(prelu: tuple[torch.Tensor | None, ...] | None, out_channels: int) -> list:
    """``prelu=(bias, slope, bias_after)`` as three contiguous float32 [O] vectors (or None each), checked."""
    if prelu is None:
        return [None, None, None]
    if len(prelu) != 3:
        raise ValueError("bindense.native: prelu must be (bias, slope, bias_after), each a tensor or None")
    vecs = []
    for name, v in zip(("bias", "slope", "bias_after"), prelu):
        if v is not None:
            v = v.detach().float().reshape(-1)
            v = v.expand(out_channels) if v.numel() == 1 else v
            if v.numel() != out_channels:
                raise ValueError(f"bindense.native: prelu {name} must have {out_channels} elements (one per output "
                                 f"channel) or 1, got {v.numel()}")
            v = v.contiguous()
        vecs.append(v)
    return vecs


def _check_channel_sums(channel_sums: torch.Tensor | None, n: int, c: int) -> torch.Tensor | None:
    """``channel_sums`` checked (a contiguous float64 [N, C] tensor), flattened for the kernels."""
    if channel_sums is None:
        return None
    if channel_sums.dtype != torch.float64 or tuple(channel_sums.shape) != (n, c) or not channel_sums.is_contiguous():
        raise ValueError(f"bindense.native: channel_sums must be a contiguous float64 tensor [{n}, {c}], got "
                         f"{channel_sums.dtype} {list(channel_sums.shape)}")
    return channel_sums.view(-1)


def _native(spec: ConvSpec, out: torch.Tensor | None, relu: bool = False, prelu: list | None = None,
            sums: torch.Tensor | None = None) -> torch.Tensor | None:
    name = isa()
    ext = build.extension() if name != "torch" else None
    if ext is None:
        return None
    epi = (spec.group_scale, spec.out_scale, spec.out_bias, spec.residual, name, out)
    w = spec.w_bits
    if spec.groups == spec.in_channels == spec.out_channels > 1:  # (a residual has O channels: O == C)
        words = w.words() if isinstance(w, PreparedWeights) else w
        y = ext.depthwise_conv2d(spec.x_bits, words, spec.in_channels, *spec.kernel_size, *spec.stride,
                                 *spec.padding, spec.channel_group_size or 0, *epi)
        y = reference.prelu_epilogue(y, prelu, relu) if prelu is not None or relu else y
        if sums is not None:
            sums.copy_(y.double().sum(dim=(2, 3)).view(-1))
        return y
    if not isinstance(w, PreparedWeights):
        wt, wpop = _prepared(ext, spec, name)
    elif w.layout == name:
        wt, wpop = w.data, None  # the kernel recomputes the tap popcounts (one pass over the weights)
    else:  # prepared for another ISA path: a layout for this call only
        wt, wpop = ext.prepare_weights(w.words(), spec.in_channels, spec.groups, spec.channel_group_size or 0,
                                       name)
    return ext.conv2d_fused(spec.x_bits, wt, wpop, spec.in_channels, spec.out_channels, *spec.kernel_size,
                            *spec.stride, *spec.padding, spec.groups, spec.channel_group_size or 0, *epi, relu,
                            *(prelu or [None, None, None]), sums)


def binary_conv2d(
    x_bits: torch.Tensor,
    w_bits: torch.Tensor | PreparedWeights,
    in_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    channel_group_size: int | None = None,
    group_scale: torch.Tensor | None = None,
    out_scale: torch.Tensor | None = None,
    out_bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    relu: bool = False,
    prelu: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None] | None = None,
    channel_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary conv of packed activations and weights: float32 [N, O, Ho, Wo] (written into ``out`` if given).

    ``y = out_scale[o] * S + out_bias[o] + residual``; a residual with another channel count Cr is added as
    ``bindense.binary.cfb(residual, O)`` without materialising it: tiled where Cr divides O (CFB's repeat), CFB's
    merged channels (means of residual channels) where Cr > O. ``S`` = sum over the taps inside the image and the input
    channels of o's group of sign_x * sign_w (an exact integer); with ``channel_group_size=g`` and
    ``group_scale`` [N, ceil(C/g)]: ``S = sum_k group_scale[n, k] * S_k`` over groups k of g consecutive input
    channels (the last one smaller). Depthwise (groups == C == O) and any channel count are supported.
    ``out``: a contiguous float32 [N, O, Ho, Wo] buffer to reuse (a fresh large output costs page faults).
    ``w_bits``: packed words (laid out for the kernels at the first call and cached on the tensor: keep the same
    tensor object between calls) or :func:`prepare_weights`' result (no cache: the layout is the only copy).
    ``relu=True`` clamps the result at 0 in the epilogue (a ReLU after the conv, fused). ``prelu=(bias, slope,
    bias_after)`` applies ``prelu(y + bias, slope) + bias_after`` per output channel before it (LearnableBias ->
    PReLU [-> LearnableBias] after the unit, fused; each part optional). ``channel_sums``: a float64 [N, O] tensor
    that receives the sum of each output plane (the mean the next DAB's threshold needs), taken by the epilogue.
    """
    spec = check_conv(x_bits, w_bits, in_channels, kernel_size, stride, padding, groups, channel_group_size,
                      group_scale, out_scale, out_bias, residual)
    if out is not None:
        check_output(out, spec)
    vecs = _epilogue_vectors(prelu, spec.out_channels)
    sums = _check_channel_sums(channel_sums, x_bits.shape[0], spec.out_channels)
    y = _native(spec, out, relu, vecs if prelu is not None else None, sums)
    if y is None:
        if isinstance(spec.w_bits, PreparedWeights):
            spec = replace(spec, w_bits=spec.w_bits.words())
        y = reference.prelu_epilogue(reference.binary_conv2d(spec), vecs if prelu is not None else None, relu)
        y = out.copy_(y) if out is not None else y
        if sums is not None:
            sums.copy_(y.double().sum(dim=(2, 3)).view(-1))
    return y


def pack_activations_stats(x: torch.Tensor, threshold: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pack_activations` plus ``sum |x - threshold|`` per (sample, channel), float32 [N, C], taken in the
    same pass over ``x`` (DAB's ``mean|s|`` statistic without materialising ``s``)."""
    ext = build.extension()
    if ext is None or isa() == "torch" or x.device.type != "cpu":
        bits = pack_activations(x, threshold)  # checks the arguments
        n, c = x.shape[:2]
        thr = torch.zeros(()) if threshold is None else threshold.expand(n, c).reshape(n, c, 1, 1)
        return bits, (x - thr).abs().sum(dim=(2, 3))
    _check_pack_args(x, threshold, "pack_activations_stats")
    n, c = x.shape[:2]
    thr = threshold.expand(n, c).contiguous() if threshold is not None else None
    bits, rows = ext.pack_activations_stats(x.contiguous(), thr, True)
    return bits, rows.sum(dim=1)


def dab_dense(x: torch.Tensor, threshold: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel DAB's output from float32 [N, C, H, W]: ``(alpha * sign(x - threshold), alpha)`` with
    ``alpha = exp(a[c] * (mean|x - threshold| - 1))`` [N, C] and sign(0) = +1; ``threshold`` [N, C] (DAB's
    ``k mean(x) + b``), ``a`` [C]. Two passes per (sample, channel) plane, the second from cache."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.dtype != torch.float32:
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"bindense.native.dab_dense: x must be a float32 tensor [N, C, H, W], got {got}")
    n, c = x.shape[:2]
    thr, a = threshold.detach().float().reshape(n, c).contiguous(), a.detach().float().reshape(c).contiguous()
    ext = build.extension()
    if ext is None or isa() == "torch" or x.device.type != "cpu":
        s = x - thr.view(n, c, 1, 1)
        alpha = torch.exp(a * (s.abs().mean(dim=(2, 3)) - 1.0))
        return torch.where(s >= 0, 1.0, -1.0) * alpha.view(n, c, 1, 1), alpha
    return tuple(ext.dab_dense(x.contiguous(), thr, a))


def sign_depthwise_conv2d(
    x: torch.Tensor,
    w_signs: torch.Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    threshold: torch.Tensor | None = None,
    dab_a: torch.Tensor | None = None,
    out_scale: torch.Tensor | None = None,
    out_bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    relu: bool = False,
    channel_scale: torch.Tensor | None = None,
    channel_sums: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise binary conv (groups == C == O) straight from float32 activations [N, C, H, W]: ``(y, scale)``.

    ``S[n, c] = sum over the taps inside the image of sign(x - threshold[n, c]) * w[c, tap]`` (sign(0) = +1, an
    exact integer), ``scale[n, c] = exp(dab_a[c] * (mean|x - threshold| - 1))`` over the plane with ``dab_a``
    (per-channel DAB, whose scale factors out of a depthwise conv exactly), or the given ``channel_scale`` [N, C]
    (grouped DAB, whose statistic spans several planes), else 1, and
    ``y = (scale * S) * out_scale[c] + out_bias[c] + residual`` (clamped at 0 with ``relu``). ``w_signs``: int8
    +1/-1 [C, 1, kh, kw] (or bool, True = +1); ``threshold``: [C] or [N, C]. One pass over ``x`` builds the signs
    and the statistic of a plane, then the taps accumulate in int16 along its rows. ``channel_sums``: a float64
    [N, C] tensor that receives the sum of each output plane (taken by the epilogue).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.dtype != torch.float32:
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"bindense.native.sign_depthwise_conv2d: x must be a float32 tensor [N, C, H, W], got {got}")
    n, c = x.shape[:2]
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
    padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
    if w_signs.dtype == torch.bool:
        w_signs = w_signs.to(torch.int8).mul_(2).sub_(1)
    if w_signs.dtype != torch.int8 or w_signs.numel() != c * kh * kw:
        raise ValueError(f"bindense.native.sign_depthwise_conv2d: w_signs must be int8 +-1 (or bool) with "
                         f"{c} x {kh} x {kw} elements (x has {c} channels), got {w_signs.dtype} {list(w_signs.shape)}")
    if threshold is not None and (threshold.dtype != torch.float32 or tuple(threshold.shape) not in ((c,), (n, c))):
        raise ValueError(f"bindense.native.sign_depthwise_conv2d: threshold must be float32 [{c}] or [{n}, {c}], "
                         f"got {threshold.dtype} {list(threshold.shape)}")
    thr = threshold.expand(n, c).contiguous() if threshold is not None else None
    if channel_scale is not None and (dab_a is not None or tuple(channel_scale.shape) != (n, c)):
        raise ValueError(f"bindense.native.sign_depthwise_conv2d: channel_scale must be [{n}, {c}] and excludes "
                         f"dab_a, got {list(channel_scale.shape)}")
    cs_in = channel_scale.detach().float().contiguous() if channel_scale is not None else None
    vec = [None if v is None else v.detach().float().reshape(-1).contiguous() for v in (dab_a, out_scale, out_bias)]
    for name, v in zip(("dab_a", "out_scale", "out_bias"), vec):
        if v is not None and v.numel() != c:
            raise ValueError(f"bindense.native.sign_depthwise_conv2d: {name} must have {c} elements, got {v.numel()}")
    ext = build.extension()
    sums = _check_channel_sums(channel_sums, n, c)
    if ext is None or isa() == "torch" or x.device.type != "cpu":
        y, scale = reference.sign_depthwise_conv2d(x, w_signs, (kh, kw), stride, padding, thr, *vec, residual, relu,
                                                   cs_in)
        if sums is not None:
            sums.copy_(y.double().sum(dim=(2, 3)).view(-1))
        return y, scale
    if residual is not None:
        residual = residual.float().contiguous()
    a, os_, ob = vec
    return tuple(ext.sign_depthwise_conv2d_sums(x.contiguous(), w_signs.contiguous(), kh, kw, *stride, *padding, thr,
                                                a, cs_in, os_, ob, residual, relu, isa(), sums))


def epilogue_(
    y: torch.Tensor,
    residual: torch.Tensor | None = None,
    prelu: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None] | None = None,
    relu: bool = False,
    channel_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """In place on a float conv's output y [N, O, H, W] (contiguous float32): ``y += cfb(residual, O)``, then
    ``prelu=(bias, slope, bias_after)`` and ``relu`` as in :func:`binary_conv2d`, in one pass per plane;
    ``channel_sums`` (float64 [N, O]) receives the plane sums. Returns ``y``."""
    if not isinstance(y, torch.Tensor) or y.dim() != 4 or y.dtype != torch.float32 or not y.is_contiguous():
        raise ValueError("bindense.native.epilogue_: y must be a contiguous float32 tensor [N, O, H, W]")
    n, o = y.shape[:2]
    if residual is not None and (residual.dim() != 4 or residual.shape[0] != n or residual.shape[2:] != y.shape[2:]):
        raise ValueError(f"bindense.native.epilogue_: residual must be [{n}, Cr, {y.shape[2]}, {y.shape[3]}], got "
                         f"{list(residual.shape)}")
    vecs = _epilogue_vectors(prelu, o)
    sums = _check_channel_sums(channel_sums, n, o)
    ext = build.extension()
    if ext is None or isa() == "torch" or y.device.type != "cpu":
        if residual is not None:
            from bindense.binary.layers import cfb  # noqa: PLC0415

            y.add_(cfb(residual, o))
        y.copy_(reference.prelu_epilogue(y, vecs if prelu is not None else None, relu))
        if sums is not None:
            sums.copy_(y.double().sum(dim=(2, 3)).view(-1))
        return y
    res = residual.float().contiguous() if residual is not None else None
    ext.epilogue_(y, res, *vecs, relu, sums)
    return y


def unpack_weights_scaled(w_bits: torch.Tensor, channels: int, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weights ``scale[o] * (+-1)`` [O, channels, kh, kw] from packed words [O, kh, kw, ceil(channels/64)]
    (one pass; the float path's weights, unpacked at each call so that the words stay the only copy)."""
    ext = build.extension()
    scale = scale.detach().float().reshape(-1).contiguous()
    if ext is None or isa() == "torch":
        return unpack_weights(w_bits, channels) * scale.view(-1, 1, 1, 1)
    return ext.unpack_weights_scaled(w_bits.contiguous(), channels, scale)


def abs_sums(x: torch.Tensor, threshold: torch.Tensor | None = None) -> torch.Tensor:
    """``sum |x - threshold|`` per (sample, channel) plane of float32 [N, C, H, W]: float32 [N, C] (DAB's
    ``mean|s|`` statistic times H * W), one read-only pass; ``threshold`` [C] or [N, C]."""
    _check_pack_args(x, threshold, "abs_sums")
    n, c = x.shape[:2]
    thr = threshold.expand(n, c).contiguous() if threshold is not None else None
    ext = build.extension()
    if ext is None or isa() == "torch" or x.device.type != "cpu":
        t = thr.view(n, c, 1, 1) if thr is not None else torch.zeros(())
        return (x - t).abs().sum(dim=(2, 3))
    return ext.abs_sums(x.contiguous(), thr)


def binary_conv_transpose2d(
    x_bits: torch.Tensor,
    w_bits: torch.Tensor,
    in_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int] = 0,
    out_scale: torch.Tensor | None = None,
    out_bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary transposed conv with kernel == stride (DPT's 2x2/2, 4x4/4): float32 [N, O, Ho, Wo].

    ``w_bits`` = ``pack_weights(w.permute(1, 0, 2, 3))`` for a ConvTranspose2d weight ``w`` [C_in, C_out, kh, kw].
    Each output pixel gets exactly one tap of every input channel; same epilogue as :func:`binary_conv2d`.
    """
    spec = check_conv(x_bits, w_bits, in_channels, kernel_size, stride, padding, 1, None, None, out_scale,
                      out_bias, residual, transposed=True)
    if isa() == "torch" or build.extension() is None:
        return reference.binary_conv_transpose2d(spec)
    # Every tap is a 1x1 conv: one native 1x1 conv with kh*kw*O outputs, then interleave the taps spatially.
    n, h, w, k = spec.x_bits.shape
    (kh, kw), o = spec.kernel_size, spec.out_channels
    w_taps = spec.w_bits.permute(1, 2, 0, 3).reshape(kh * kw * o, 1, 1, k)
    s = binary_conv2d(spec.x_bits, w_taps, spec.in_channels, 1)
    s = s.view(n, kh, kw, o, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, o, h * kh, w * kw)
    (ph, pw), (ho, wo) = spec.padding, spec.out_hw
    s = s[:, :, ph:ph + ho, pw:pw + wo]
    return reference.epilogue(s, spec).contiguous()
