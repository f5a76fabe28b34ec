"""Variational information bottleneck (Bi-MTDP, docs/MULTITASK.md#1-the-paper-and-our-choices) on backbone features.

``mu = head_mu(x)``, ``logvar = clamp(s * head_logvar(x) + b)``; ``z = mu + exp(logvar / 2) * eps`` while
training and ``z = mu`` at eval. The KL to the standard normal, averaged per element, is kept on the
module after each forward (``last_kl``) so the LightningModule adds ``beta * KL`` as its own loss term.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

ConvFactory = Callable[..., nn.Module]


def fp32_conv(in_channels: int, out_channels: int, kernel_size: int, **kwargs) -> nn.Module:
    """Full-precision ``nn.Conv2d`` with the conv-factory signature (extra unit options ignored)."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=kwargs.get("stride", 1),
        padding=kwargs.get("padding", 0),
        groups=kwargs.get("groups", 1),
        bias=kwargs.get("bias", True),
    )


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """Mean over elements of ``KL(N(mu, exp(logvar)) || N(0, 1)) = 0.5 (mu^2 + e^logvar - 1 - logvar)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """``mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` unless given (gradients reach mu and logvar)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


class VariationalBottleneck(nn.Module):
    """VIB layer on one feature map ``(B, C, H, W)``; output has the same shape.

    Args:
        channels: feature channels C.
        conv: factory ``conv(in, out, k, padding=..., bypass=...)`` for the two 1x1 heads (the method's unit
            in the binary setting, :func:`fp32_conv` otherwise).
        logvar_init: initial log-variance (the per-channel offset ``b``).
        logvar_scale_init: initial per-channel scale ``s`` on the log-variance head output.
        logvar_range: clamp of the log-variance (numerical safety).
        sample_at_eval: keep sampling at eval (off by default: eval uses the mean).
    """

    def __init__(
        self,
        channels: int,
        conv: ConvFactory = fp32_conv,
        logvar_init: float = -4.0,
        logvar_scale_init: float = 0.1,
        logvar_range: tuple[float, float] = (-10.0, 5.0),
        sample_at_eval: bool = False,
    ) -> None:
        super().__init__()
        self.mu_head = conv(channels, channels, 1)
        self.logvar_head = conv(channels, channels, 1, bypass="none")
        self.logvar_scale = nn.Parameter(torch.full((1, channels, 1, 1), float(logvar_scale_init)))
        self.logvar_bias = nn.Parameter(torch.full((1, channels, 1, 1), float(logvar_init)))
        self.logvar_range = (float(logvar_range[0]), float(logvar_range[1]))
        self.sample_at_eval = sample_at_eval
        self.last_kl: Tensor | None = None

    def stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of the posterior for input ``x``."""
        logvar = self.logvar_scale * self.logvar_head(x) + self.logvar_bias
        return self.mu_head(x), logvar.clamp(*self.logvar_range)

    def forward(self, x: Tensor) -> Tensor:
        mu, logvar = self.stats(x)
        self.last_kl = gaussian_kl(mu, logvar)
        if self.training or self.sample_at_eval:
            return reparameterize(mu, logvar)
        return mu


class FeatureVIB(nn.Module):
    """One :class:`VariationalBottleneck` per named feature (e.g. the backbone stages fed to a decoder).

    ``forward(features)`` returns the same mapping with the bottlenecked entries replaced; ``last_kl`` is
    the mean of the per-feature KLs of the last forward.
    """

    def __init__(self, channels: Mapping[str, int], names: Iterable[str], **kwargs) -> None:
        super().__init__()
        names = list(names)
        unknown = [n for n in names if n not in channels]
        if unknown:
            raise ValueError(f"VIB features {unknown} not among the backbone features {list(channels)}")
        if not names:
            raise ValueError("VIB needs at least one feature to act on")
        self.layers = nn.ModuleDict({n: VariationalBottleneck(channels[n], **kwargs) for n in names})

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = dict(features)
        for name, layer in self.layers.items():
            out[name] = layer(features[name])
        return out

    @property
    def last_kl(self) -> Tensor | None:
        kls = [layer.last_kl for layer in self.layers.values() if layer.last_kl is not None]
        return torch.stack(kls).mean() if kls else None
