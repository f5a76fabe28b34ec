"""Bit-packed export of a model (``export_packed``) and its loader (``load_packed``).

Every binary unit's latent weight (``BinaryConv2d`` / ``BinaryConvTranspose2d`` / ``BinaryLinear`` with a 1-bit
weight binarizer) is stored as the binarized weight the forward pass uses, in one of three exact encodings:

* ``sign``: values +-1 -> sign bits only;
* ``scaled_sign``: ``scale_o * (+-1)`` per scale channel (ReActNet / BiDense weights; the binarizer's ``channel_dim``,
  the input channel of the authors' transposed convs) -> sign bits + float32 scale;
* ``two_level``: two values per output channel (AdaBin ``alpha_w * (+-1) + beta_w``) -> bits + float32 ``hi``
  / ``lo`` (``alpha_w = (hi - lo) / 2``, ``beta_w = (hi + lo) / 2``).

Every other ``state_dict`` entry (BN, activation-binarizer parameters, full-precision layers) is stored as
float32 (or float16 on request); integer buffers keep their dtype; tied entries (a module shared by several
positions) are stored once. The loader rebuilds the model from the config in the header, loads the entries and
replaces each packed unit's weight binarizer by :class:`PackedWeight` (identity) with the unit's weight set to
the decoded binarized weight, so the loaded model's eval outputs equal the original's bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from bindense.binary import BinaryConv2d, BinaryConvTranspose2d, BinaryLinear, use_reference
from bindense.export.bits import pack_signs, unpack_signs
from bindense.export.container import (
    DTYPES,
    FORMAT_VERSION,
    PackedFormatError,
    dtype_name,
    read_container,
    write_container,
)
from bindense.utils.checkpoint import build_net

KERNELS = ("float", "gemm", "xnor")
RUNTIMES = ("torch", "native")
FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: module paths a header config may instantiate (``_target_``); anything else is refused
ALLOWED_TARGETS = ("bindense.", "torch.nn.")
BINARY_UNITS = (BinaryConv2d, BinaryConvTranspose2d, BinaryLinear)


class PackedWeight(nn.Module):
    """Weight "binarizer" of a loaded unit: its weight already holds the decoded binarized values."""

    bits = 1

    def __init__(self, encoding: str, channel_dim: int = 0) -> None:
        super().__init__()
        self.encoding = encoding
        self.channel_dim = channel_dim

    def forward(self, w: Tensor) -> Tensor:
        return w

    def extra_repr(self) -> str:
        return f"encoding={self.encoding}"


def binary_units(model: nn.Module) -> dict[str, nn.Module]:
    """``{module name: unit}`` of the units whose weights are 1-bit (each shared unit once)."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, BINARY_UNITS) and getattr(m.weight_binarizer, "bits", 32) == 1
    }


def _channel_dim(unit: nn.Module) -> int:
    return getattr(unit.weight_binarizer, "channel_dim", 1 if isinstance(unit, BinaryConvTranspose2d) else 0)


def _per_channel(t: Tensor, channel_dim: int) -> Tensor:
    """``t`` as (channels, rest) with the output-channel axis first."""
    return t.movedim(channel_dim, 0).reshape(t.shape[channel_dim], -1)


def _broadcast(v: Tensor, shape: torch.Size | list[int], channel_dim: int) -> Tensor:
    view = [1] * len(shape)
    view[channel_dim] = -1
    return v.view(view)


def encode_binary_weight(wb: Tensor, channel_dim: int) -> tuple[str, dict[str, Tensor]]:
    """Exact encoding of a binarized weight: ``(encoding, {part: tensor})``; raises if it is not two-level."""
    rows = _per_channel(wb, channel_dim)
    hi, lo = rows.amax(dim=1), rows.amin(dim=1)
    if bool(((rows == 1) | (rows == -1)).all()):
        encoding, parts = "sign", {"signs": pack_signs(wb > 0)}
    elif bool((hi == -lo).all()) and bool((rows.abs() == hi.unsqueeze(1)).all()):
        # +-scale per channel; the sign bit also carries the sign of zero-scale rows (copysign(0, w))
        encoding, parts = "scaled_sign", {"signs": pack_signs(~torch.signbit(wb)), "scale": hi.float()}
    elif bool(((rows == hi.unsqueeze(1)) | (rows == lo.unsqueeze(1))).all()):
        encoding, parts = (
            "two_level",
            {"signs": pack_signs(wb == _broadcast(hi, wb.shape, channel_dim)), "hi": hi.float(), "lo": lo.float()},
        )
    else:
        raise ValueError("weight has more than two values per output channel: it is not a binary weight")
    decoded = decode_binary_weight(encoding, parts, list(wb.shape), channel_dim, wb.dtype)
    if not torch.equal(decoded, wb) or not torch.equal(torch.signbit(decoded), torch.signbit(wb)):
        raise ValueError(f"{encoding} encoding does not reproduce the binarized weight exactly")
    return encoding, parts


def decode_binary_weight(
    encoding: str, parts: Mapping[str, Tensor], shape: list[int], channel_dim: int, dtype: torch.dtype
) -> Tensor:
    """The binarized weight from its packed parts (inverse of :func:`encode_binary_weight`)."""
    positive = unpack_signs(parts["signs"], shape)
    if encoding == "sign":
        return torch.where(positive, 1.0, -1.0).to(dtype)
    if encoding == "scaled_sign":
        scale = _broadcast(parts["scale"].to(dtype), shape, channel_dim)
        return torch.where(positive, scale, -scale)
    if encoding == "two_level":
        hi = _broadcast(parts["hi"].to(dtype), shape, channel_dim)
        lo = _broadcast(parts["lo"].to(dtype), shape, channel_dim)
        return torch.where(positive, hi, lo)
    raise PackedFormatError(f"unknown binary weight encoding {encoding!r}")


def _jsonable(config: Any) -> Any:
    if config is None:
        return None
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(config, DictConfig | ListConfig):
            return OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return config


def export_packed(
    model: nn.Module,
    path: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
    float_dtype: str = "float32",
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model`` to ``path`` as a bit-packed ``.bdn`` file; returns a size summary.

    Args:
        config: the (resolved) run config; its ``model`` node (``_target_`` + arguments) is what
            :func:`load_packed` instantiates to rebuild the model. ``None``: the loader needs a ``model``.
        float_dtype: storage of the full-precision floating-point entries, ``float32`` or ``float16``
            (float16 halves them, at the cost of exactness). Binary scales are always float32.
    """
    if float_dtype not in FLOAT_DTYPES:
        raise ValueError(f"float_dtype must be one of {sorted(FLOAT_DTYPES)}, got {float_dtype!r}")
    ternary = sorted({name for name, m in model.named_modules() if getattr(m, "sign_zero", "plus") == "zero"})
    if ternary:
        raise ValueError(
            f"cannot bit-pack a model built with method.sign_zero=zero: its binarizers map exact zeros to 0, so "
            f"weights and activations are ternary {{-1, 0, +1}} (e.g. {ternary[0]}); export a sign_zero=plus model"
        )
    units = {id(u.weight): (name, u) for name, u in binary_units(model).items()}
    entries: list[dict[str, Any]] = []
    arrays: dict[str, Tensor] = {}
    first_key: dict[int, str] = {}
    counts = {"binary_weights": 0, "binary_elements": 0, "float_elements": 0, "aliases": 0}
    with torch.no_grad(), use_reference(False):
        for key, t in model.state_dict(keep_vars=True).items():
            if id(t) in first_key:  # the same tensor under another name (a shared module)
                entries.append({"name": key, "alias": first_key[id(t)]})
                counts["aliases"] += 1
                continue
            first_key[id(t)] = key
            if id(t) in units:
                name, unit = units[id(t)]
                cd = _channel_dim(unit)
                wb = unit.binary_weight().detach().cpu()
                encoding, parts = encode_binary_weight(wb, cd)
                for part, value in parts.items():
                    arrays[f"{key}:{part}"] = value
                entries.append(
                    {
                        "name": key,
                        "kind": "binary",
                        "encoding": encoding,
                        "module": name,
                        "shape": list(wb.shape),
                        "channel_dim": cd,
                        "dtype": dtype_name(wb.dtype),
                        "parts": sorted(parts),
                        "unit": describe_unit(unit),
                    }
                )
                counts["binary_weights"] += 1
                counts["binary_elements"] += wb.numel()
                continue
            t = t.detach().cpu()
            stored = t.to(FLOAT_DTYPES[float_dtype]) if t.is_floating_point() else t
            arrays[key] = stored
            entries.append({"name": key, "kind": "tensor", "dtype": dtype_name(t.dtype)})
            counts["float_elements"] += t.numel() if t.is_floating_point() else 0
    header = {
        "format": "bindense-packed",
        "version": FORMAT_VERSION,
        "bindense": _package_version(),
        "torch": torch.__version__,
        "float_dtype": float_dtype,
        "config": _jsonable(config),
        "metadata": dict(metadata or {}),
        "summary": counts,
        "tensors": entries,
    }
    size = write_container(path, header, arrays)
    return {"path": str(path), "bytes": size, **counts}


def describe_unit(unit: nn.Module) -> dict[str, Any]:
    """What a runtime needs to know about a binary unit besides its tensors (stored in the header, checked on load).

    ``activation`` names the activation binarizer (its thresholds are its stored parameters: RSign ``bias``,
    BiSR ``k``/``b``, AdaBin ``alpha``/``beta``, DAB ``k``/``b`` with ``a`` for the scale);
    ``dab_group_size`` is DAB's channels per scale (null: per channel).
    """
    act = unit.activation_binarizer
    desc: dict[str, Any] = {
        "type": type(unit).__name__,
        "activation": type(act).__name__,
        "dab_group_size": getattr(act, "group_size", None),
        "in_channels": int(getattr(unit, "in_channels", getattr(unit, "in_features", 0))),
        "bypass": unit.bypass,
        "norm": unit.norm is not None,
        "bias": unit.bias is not None,
    }
    if isinstance(unit, BinaryConv2d | BinaryConvTranspose2d):
        desc.update(
            kernel_size=list(unit.kernel_size),
            stride=list(unit.stride),
            padding=list(unit.padding) if isinstance(unit.padding, tuple) else unit.padding,
            dilation=list(unit.dilation),
            groups=int(unit.groups),
        )
    return desc


def _check_unit(entry: Mapping[str, Any], unit: nn.Module, path: str | os.PathLike) -> None:
    """Refuse a rebuilt unit that differs from the one the file describes (wrong config or model)."""
    stored = entry.get("unit")
    if stored is None:
        return
    actual = describe_unit(unit)
    diff = {k: (v, actual.get(k)) for k, v in stored.items() if actual.get(k) != v}
    if diff:
        raise PackedFormatError(
            f"{path}: unit {entry['module']!r} does not match the export: "
            + ", ".join(f"{k} is {got!r}, the file expects {want!r}" for k, (want, got) in diff.items())
        )


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bindense")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _check_targets(node: Any, where: str = "model") -> None:
    """Refuse header configs that would instantiate anything outside bindense / torch.nn."""
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None and not str(target).startswith(ALLOWED_TARGETS):
            raise PackedFormatError(f"config {where}._target_ {target!r} is outside {ALLOWED_TARGETS}; not loading")
        for k, v in node.items():
            _check_targets(v, f"{where}.{k}")
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            _check_targets(v, f"{where}[{i}]")


def build_model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate the ``model`` node of a run config (no weights are loaded; no pretrained file is read)."""
    node = dict(config.get("model") or {}) if isinstance(config, Mapping) else {}
    if "_target_" not in node:
        raise PackedFormatError("the file's config has no model._target_; pass model=... to load_packed")
    _check_targets(node)
    return build_net(node)  # pretrained_ckpt is dropped: the file holds every weight


def replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> int:
    """Put ``new`` wherever ``old`` is a child inside ``root`` (every position of a shared module)."""
    count = 0
    for parent in root.modules():
        for name, child in parent._modules.items():
            if child is old:
                parent._modules[name] = new
                count += 1
    return count


def load_packed(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    kernel: str = "float",
    map_location: str | torch.device = "cpu",
    runtime: str = "torch",
) -> nn.Module:
    """Rebuild a model from a ``.bdn`` file (verified first); returns it in eval mode.

    Args:
        model: a freshly built model of the same config; default: built from the header's config.
        kernel: ``float`` (the decoded binarized weights in the ordinary layers: equals the fake-quantised
            model exactly), or a packed binary kernel for the BiDense convs (``gemm``: +-1 GEMM with the DAB
            scale folded into the activations; ``xnor``: XNOR-popcount on integer words), see
            :mod:`bindense.export.kernels`. Units the kernel does not cover keep the float path.
        runtime: ``torch`` (the model as above) or ``native``: binary convs on the bit-packed native kernels
            with fused epilogues, weights kept packed, CPU only (:mod:`bindense.export.runtime`); it returns a
            :class:`~bindense.export.runtime.NativeModel` that checks its input.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "native" and (kernel != "float" or torch.device(map_location).type != "cpu"):
        raise ValueError(
            "runtime='native' runs on the CPU with its own kernels: leave kernel='float', map_location='cpu'"
        )
    header, arrays = read_container(path)
    if header.get("format") != "bindense-packed":
        raise PackedFormatError(f"{path}: header format is {header.get('format')!r}, not 'bindense-packed'")
    if model is None:
        model = build_model_from_config(header.get("config") or {})
    state: dict[str, Tensor] = {}
    binary: dict[str, dict[str, Any]] = {}
    for entry in header["tensors"]:
        name = entry["name"]
        if "alias" in entry:
            state[name] = state[entry["alias"]]
        elif entry["kind"] == "binary":
            parts = {p: arrays[f"{name}:{p}"] for p in entry["parts"]}
            state[name] = decode_binary_weight(
                entry["encoding"], parts, entry["shape"], entry["channel_dim"], _dtype(entry["dtype"])
            )
            binary[name] = {**entry, "parts": parts}
        else:
            state[name] = arrays[name].to(_dtype(entry["dtype"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise PackedFormatError(f"{path}: the stored tensors do not match the model: {err}") from err
    for entry in binary.values():
        unit = model.get_submodule(entry["module"])
        _check_unit(entry, unit, path)
        unit.weight_binarizer = PackedWeight(entry["encoding"], entry["channel_dim"])
        unit.weight.requires_grad_(False)
    if kernel != "float":
        from bindense.export.kernels import PackedBinaryConv2d

        for entry in binary.values():
            unit = model.get_submodule(entry["module"])
            if PackedBinaryConv2d.supports(unit, entry["encoding"]):
                packed = PackedBinaryConv2d.from_unit(unit, entry["parts"]["signs"], entry["parts"]["scale"], kernel)
                replace_module(model, unit, packed)
    if runtime == "native":
        from bindense.export.runtime import to_native

        with torch.no_grad():
            return to_native(model.eval(), binary, replace_module).eval()
    return model.to(map_location).eval()


def _dtype(name: str) -> torch.dtype:
    return DTYPES[name]

