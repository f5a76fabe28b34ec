"""How the native runtime turns each activation binarizer's input into what the binary kernels take
(docs/DEPLOY.md, "Native runtime"): one adapter per binarizer type (:data:`INPUTS`).

* ``sign``: bits of ``x``; ``rsign``: bits of ``x - (-bias)``; ``bisr``: bits of ``k x + b``.
* ``adabin``: bits of ``(x - beta) / alpha``; the scalar ``alpha`` folds into ``out_scale``, the offset
  ``alpha * beta`` (and AdaBin's weight offset) become border-exact correction maps added to the residual.
* ``dab`` with ``dab_groups``: bits of ``s = x - (k mean(x) + b)`` and one scale per (sample, group), applied by
  the kernel once per group (``channel_group_size``). Per-channel DAB is a weighted binary conv that no popcount
  can express: it runs exactly as a torch float conv of DAB's output with the +-1 weights unpacked from the
  packed storage at each call (the "float path").
* Depthwise convs (ConvNeXt's 7x7) need no packed input: the runtime's sign-depthwise kernel reads the float
  input, takes its signs against the binarizer's threshold (and DAB's scale) in the same pass per channel plane,
  and keeps the weights as 1-bit bytes (exact: 49 terms of +-1 x +-1 per output, per-channel scales factor out).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bindense import native
from bindense.binary.binarizers import DAB, AdaBinActivation, BiSRActivation, RSign, SignActivation


@dataclass
class BinaryInput:
    """A unit input turned into what the kernel takes.

    ``bits``: packed activations; ``scale``: a scalar activation scale (or None); ``group_size`` /
    ``group_scale``: DAB's scales per (sample, group); ``dense``: the float activation when the unit needs it
    (per-channel DAB's float path, the AdaBin correction maps).
    """

    bits: Tensor | None = None
    scale: Tensor | None = None
    offset: Tensor | None = None
    group_size: int | None = None
    group_scale: Tensor | None = None
    dense: Tensor | None = None


class _Input(nn.Module):
    """Base of the activation adapters: holds the original binarizer (its parameters) and packs an input."""

    def __init__(self, binarizer: nn.Module) -> None:
        super().__init__()
        self.binarizer = binarizer

    def dense(self, x: Tensor) -> Tensor:
        """The binarized activation exactly as the unpacked model computes it."""
        return self.binarizer(x)


class _SignInput(_Input):
    def forward(self, x: Tensor, need_dense: bool) -> BinaryInput:
        return BinaryInput(bits=native.pack_activations(x), dense=self.dense(x) if need_dense else None)


class _RSignInput(_Input):
    def forward(self, x: Tensor, need_dense: bool) -> BinaryInput:
        threshold = self.binarizer.bias.detach().reshape(-1).neg().contiguous()  # x - (-bias) == x + bias exactly
        return BinaryInput(bits=native.pack_activations(x, threshold), dense=self.dense(x) if need_dense else None)


class _BiSRInput(_Input):
    def forward(self, x: Tensor, need_dense: bool) -> BinaryInput:
        z = self.binarizer.k * x + self.binarizer.b
        return BinaryInput(bits=native.pack_activations(z), dense=self.dense(x) if need_dense else None)


class _AdaBinInput(_Input):
    def forward(self, x: Tensor, need_dense: bool) -> BinaryInput:
        alpha, beta = self.binarizer.alpha.detach(), self.binarizer.beta.detach()
        bits = native.pack_activations(((x - beta) / alpha).contiguous())
        return BinaryInput(bits=bits, scale=alpha, offset=alpha * beta, dense=self.dense(x))


#: attribute of a native unit's output tensor holding the float64 sums of its planes [N, C], taken by the kernel's
#: epilogue (docs/DEPLOY.md section 5): the next DAB's mean without another pass over the tensor
CHANNEL_SUMS = "_bindense_channel_sums"


def dab_threshold(dab: DAB, x: Tensor) -> Tensor:
    """DAB's threshold ``k mean(x) + b`` per (sample, channel), [N, C], with the same ops as :meth:`DAB.centred`.

    The mean comes from the plane sums a native unit's epilogue attached to ``x`` (:data:`CHANNEL_SUMS`, summed
    in float64, rounded once) where ``x`` is such an output, else from ``x.mean`` (then ``x - threshold`` is DAB's
    ``s`` bit for bit). The two means agree to float rounding (summation order)."""
    n, c = x.shape[:2]
    sums = getattr(x, CHANNEL_SUMS, None)
    if sums is not None and tuple(sums.shape) == (n, c):
        mean = (sums / (x.shape[2] * x.shape[3])).to(x.dtype).view(n, c, 1, 1)
    else:
        mean = x.mean(dim=(2, 3), keepdim=True)
    return (dab.k * mean + dab.b).reshape(n, c).contiguous()


class _DABInput(_Input):
    """Grouped DAB (``dab_groups``); per-channel DAB units take the float path (:attr:`float_path`).

    The threshold is DAB's own (the mean in torch, so the signs are bit-identical); ``mean|s|`` is summed by the
    packing pass itself instead of materialising ``s`` (equal up to float summation order)."""

    def forward(self, x: Tensor, need_dense: bool) -> BinaryInput:
        dab: DAB = self.binarizer
        bits, abs_sums = native.pack_activations_stats(x, dab_threshold(dab, x))
        scale = dab.group_alpha_from(abs_sums / (x.shape[2] * x.shape[3])).detach().contiguous()
        dense = dab(x) if need_dense else None
        return BinaryInput(bits=bits, group_size=dab.group_size, group_scale=scale, dense=dense)


#: activation binarizer type -> its packing adapter
INPUTS: dict[type[nn.Module], type[_Input]] = {
    SignActivation: _SignInput,
    RSign: _RSignInput,
    BiSRActivation: _BiSRInput,
    AdaBinActivation: _AdaBinInput,
    DAB: _DABInput,
}
