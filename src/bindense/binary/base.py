"""The binarizer base classes and their registry (docs/EXTENDING.md).

:class:`Binarizer` carries ``bits``, the registered ``name`` and ``latent_init_std``; :class:`ActivationBinarizer`
and :class:`WeightBinarizer` fix one constructor per kind. :func:`register_binarizer` is the class decorator that
puts a binarizer in :data:`ACTIVATIONS` or :data:`WEIGHTS`; :func:`make_activation` / :func:`make_weight` build one
by name. The binarizers themselves are in :mod:`bindense.binary.binarizers`.

Every 1-bit binarizer maps an exact zero to +1 (``sign_zero = "plus"``, the default). :func:`set_sign_zero`
switches them to ``"zero"``: ``torch.sign`` values (0 at exact zeros, as in the authors' code) with the surrogate
gradients unchanged (docs/METHODS.md, section 4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

from torch import Tensor, nn

from bindense.registry import Registry


def _param_shape(channels: int, channels_last: bool) -> tuple[int, ...]:
    return (1, 1, channels) if channels_last else (1, channels, 1, 1)


SIGN_ZERO = ("plus", "zero")
BINARIZER_KINDS = ("activation", "weight")


def zero_at_zeros(out: Tensor, s: Tensor) -> Tensor:
    """``out`` with its value set to 0 where ``s == 0`` (``torch.sign`` semantics); the gradient is ``out``'s."""
    return out - (out * (s == 0)).detach()


def _stat_dims(x: Tensor, channels_last: bool) -> tuple[int, ...]:
    """Axes of the per-sample, per-channel statistics: spatial axes, or tokens for ``(B, N, C)``."""
    return tuple(range(1, x.dim() - 1)) if channels_last else tuple(range(2, x.dim()))


class Binarizer(nn.Module):
    """Base of every binarizer: its bit-width, its registered name (set by :func:`register_binarizer`) and, for
    weight binarizers, the init of the latent weight they binarize (``latent_init_std``: N(0, std^2), or torch's
    default init where None)."""

    bits: ClassVar[int] = 1
    name: ClassVar[str] = ""
    latent_init_std: ClassVar[float | None] = None


class _SignZero(Binarizer):
    """A 1-bit binarizer: what an exact zero of the signed tensor maps to (``plus``: +1, ``zero``: 0)."""

    sign_zero = "plus"

    def _zeros(self, out: Tensor, s: Tensor) -> Tensor:
        return zero_at_zeros(out, s) if self.sign_zero == "zero" else out


class ActivationBinarizer(_SignZero):
    """Base of the activation binarizers; one constructor for all of them.

    Args:
        channels: input channels (per-channel parameters; unused by parameter-free binarizers).
        channels_last: channels on the last axis (token inputs of linears) instead of axis 1.
        groups: channels per scale for binarizers with a grouped scale (DAB, ``method.dab_groups``); the others
            have no per-channel scale and ignore it.
    """

    def __init__(self, channels: int | None = None, channels_last: bool = False, groups: int | str | None = None):
        super().__init__()
        self.channels, self.channels_last = channels, channels_last


class WeightBinarizer(_SignZero):
    """Base of the weight binarizers; one constructor for all of them (``channel_dim``: output-channel axis).

    Binary latent weights start at N(0, 1e-3^2) (``latent_init_std``; docs/METHODS.md) unless a subclass says
    otherwise.
    """

    latent_init_std: ClassVar[float | None] = 1e-3

    def __init__(self, channel_dim: int = 0) -> None:
        super().__init__()


#: registered activation / weight binarizers by config name (filled by :func:`register_binarizer`)
ACTIVATIONS: Registry[type[Binarizer]] = Registry("activation binarizer", "method.activation")
WEIGHTS: Registry[type[Binarizer]] = Registry("weight binarizer", "method.weight")
_REGISTRIES = {"activation": ACTIVATIONS, "weight": WEIGHTS}

B = TypeVar("B", bound=type[Binarizer])


def register_binarizer(name: str, *kinds: str) -> Callable[[B], B]:
    """Class decorator: register a binarizer under ``name`` (``@register_binarizer("dab")``).

    The kind (activation or weight) follows the base class; ``kinds`` names it for a class that is both
    (:class:`FullPrecision`). A name registered twice for one kind is an error.
    """

    def register(cls: B) -> B:
        found = kinds or tuple(
            kind for kind, base in (("activation", ActivationBinarizer), ("weight", WeightBinarizer))
            if issubclass(cls, base)
        )  # fmt: skip
        if not found or any(kind not in BINARIZER_KINDS for kind in found):
            raise TypeError(f"{cls.__name__}: subclass ActivationBinarizer or WeightBinarizer, or pass the kinds")
        for kind in found:
            _REGISTRIES[kind].register(name, cls)
        cls.name = name
        return cls

    return register


def make_activation(
    name: str, channels: int, channels_last: bool = False, groups: int | str | None = None
) -> Binarizer:
    """Activation binarizer by registered name (:data:`ACTIVATIONS`: ``fp32 | sign | bivit | rsign | adabin |
    bisr | dab`` and any registered since); ``groups`` is DAB's ``method.dab_groups``."""
    return ACTIVATIONS.lookup(name)(channels, channels_last=channels_last, groups=groups)


def make_weight(name: str, channel_dim: int = 0) -> Binarizer:
    """Weight binarizer by registered name (:data:`WEIGHTS`: ``fp32 | sign | scaled_sign | centered_sign |
    bivit_sign | adabin`` and any registered since)."""
    return WEIGHTS.lookup(name)(channel_dim=channel_dim)


def set_sign_zero(model: nn.Module, mode: str) -> nn.Module:
    """Set what every binarizer in ``model`` maps an exact zero to: ``plus`` (+1) or ``zero`` (0); returns it."""
    if mode not in SIGN_ZERO:
        raise ValueError(f"method.sign_zero={mode!r} is not one of {list(SIGN_ZERO)}")
    for module in model.modules():
        if isinstance(module, _SignZero):
            module.sign_zero = mode
    return model
