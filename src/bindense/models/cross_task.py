"""Cross-task distillation module (PAD-Net style; Bi-MTDP-C binarizes it),
docs/MULTITASK.md#1-the-paper-and-our-choices.

For every task ``t``: ``f_t' = f_t + sum_{a != t} message_{t<-a}(f_a) * sigmoid(gate_{t<-a}(f_a))``, where
message and gate are convs built by the given factory (the method's binary unit in the "-C" variant, full
precision otherwise). The gate's sigmoid and the sum stay full precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from bindense.models.vib import ConvFactory, fp32_conv


class CrossTaskModule(nn.Module):
    """Gated message passing between task decoder features (all ``(B, C, H, W)`` with the same C)."""

    def __init__(
        self, tasks: Sequence[str], channels: int, conv: ConvFactory = fp32_conv, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        if len(self.tasks) < 2:
            raise ValueError(f"cross-task module needs at least two tasks, got {self.tasks}")
        pad = kernel_size // 2
        pairs = [(t, a) for t in self.tasks for a in self.tasks if a != t]
        self.message = nn.ModuleDict(
            {f"{t}_from_{a}": conv(channels, channels, kernel_size, padding=pad) for t, a in pairs}
        )
        self.gate = nn.ModuleDict(
            {f"{t}_from_{a}": conv(channels, channels, kernel_size, padding=pad) for t, a in pairs}
        )

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        missing = [t for t in self.tasks if t not in features]
        if missing:
            raise KeyError(f"cross-task module: no decoder features for tasks {missing}")
        out: dict[str, Tensor] = {}
        for t in self.tasks:
            messages = [
                self.message[f"{t}_from_{a}"](features[a]) * torch.sigmoid(self.gate[f"{t}_from_{a}"](features[a]))
                for a in self.tasks
                if a != t
            ]
            out[t] = features[t] + torch.stack(messages).sum(0)
        return out
