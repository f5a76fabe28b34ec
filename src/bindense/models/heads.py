"""Task heads (docs/ARCHITECTURES.md#2-the-upernet-dataflow), run at full input resolution on the upsampled neck map.

One factory, :func:`make_head`, builds the head a task declares (``Task.head``, :mod:`bindense.tasks`):

- ``logits`` (seg / parts): conv3x3 unit (no bias, with BN) -> ReLU -> full-precision 1x1 -> ``(B, K, H, W)``.
- ``scaled_sigmoid`` (depth): conv3x3 unit -> ReLU -> full-precision 1x1 -> sigmoid, times ``max_depth``
  -> metres ``(B, 1, H, W)``. In the standard fp32 layout the depth conv has a bias and no BN
  (docs/ARCHITECTURES.md#41-fp32).
- ``normalized`` (normals): conv3x3 unit -> ReLU -> 1x1 -> unit vectors (L2-normalised over channels).
- ``linear`` (edge / sal): conv3x3 unit -> ReLU -> 1x1 -> logits (a sigmoid gives the probability).

The final 1x1 is a :class:`PredictionConv`: always full precision; the complexity "paper rule" counts its
weight as binary in binary models (docs/COMPLEXITY.md#paper-rule).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindense.models.spec import MethodSpec
from bindense.registry import Registry
from bindense.tasks import get_task


class PredictionConv(nn.Conv2d):
    """Full-precision final 1x1 prediction conv (with bias)."""

    paper_rule_binary = True  # docs/COMPLEXITY.md#paper-rule: the paper's count treats this weight as binary

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1, bias=True)


class SegHead(nn.Module):
    """Segmentation head: ``conv3x3 -> ReLU -> PredictionConv`` (logits)."""

    def __init__(self, spec: MethodSpec, in_channels: int, num_classes: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_channels
        self.conv = spec.conv(in_channels, hidden, 3, padding=1, bias=False)
        self.act = nn.ReLU()
        self.classifier = PredictionConv(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.act(self.conv(x)))


class DepthHead(nn.Module):
    """Depth head: ``conv3x3 -> ReLU -> PredictionConv(1) -> sigmoid * max_depth`` (metres)."""

    def __init__(
        self, spec: MethodSpec, in_channels: int, max_depth: float, hidden: int = 32, out_channels: int = 1
    ) -> None:
        super().__init__()
        plain = not spec.fpn_norm
        self.conv = spec.conv(in_channels, hidden, 3, padding=1, bias=plain, norm=not plain)
        self.act = nn.ReLU()
        self.predictor = PredictionConv(hidden, out_channels)
        self.max_depth = float(max_depth)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.predictor(self.act(self.conv(x)))) * self.max_depth

    def extra_repr(self) -> str:
        return f"max_depth={self.max_depth}"


class DenseHead(nn.Module):
    """``conv3x3 unit -> ReLU -> PredictionConv(out)`` with an optional output transform.

    ``output="normalize"`` L2-normalises over channels (surface normals); ``"identity"`` returns logits.
    """

    def __init__(
        self, spec: MethodSpec, in_channels: int, out_channels: int, hidden: int, output: str = "identity"
    ) -> None:
        super().__init__()
        if output not in ("identity", "normalize"):
            raise ValueError(f"unknown head output {output!r}")
        self.conv = spec.conv(in_channels, hidden, 3, padding=1, bias=False)
        self.act = nn.ReLU()
        self.predictor = PredictionConv(hidden, out_channels)
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        y = self.predictor(self.act(self.conv(x)))
        return F.normalize(y, dim=1) if self.output == "normalize" else y


HeadFactory = Callable[..., nn.Module]
#: ``Task.head`` -> ``factory(spec, in_channels, out_channels, hidden, **head_options)``
HEADS: Registry[HeadFactory] = Registry("head", "Task.head")
HEADS.register("logits", lambda spec, cin, cout, hidden: SegHead(spec, cin, cout))
HEADS.register(
    "scaled_sigmoid", lambda spec, cin, cout, hidden, max_depth: DepthHead(spec, cin, float(max_depth), hidden, cout)
)
HEADS.register("normalized", lambda spec, cin, cout, hidden: DenseHead(spec, cin, cout, hidden, output="normalize"))
HEADS.register("linear", lambda spec, cin, cout, hidden: DenseHead(spec, cin, cout, hidden))


def make_head(task: str, spec: MethodSpec, in_channels: int, options: Mapping[str, Any], hidden: int = 32) -> nn.Module:
    """The head of ``task`` on a neck map with ``in_channels`` channels.

    ``options`` holds the data-config values the task reads (``num_classes``, ``num_parts``, ``max_depth``);
    ``hidden`` is the width of the non-label heads.
    """
    out_channels, kwargs = head_inputs(task, options)
    return HEADS.lookup(get_task(task).head)(spec, in_channels, out_channels, hidden, **kwargs)


def head_inputs(task: str, options: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """(output channels, head options) of ``task`` from the data-config values; a clear error if one lacks."""
    t = get_task(task)
    if t.head not in HEADS:
        raise ValueError(f"task {task!r} asks for an unregistered head: {HEADS.error(t.head)}")
    out_channels = t.out_channels(options)
    missing = [k for k in t.head_options if not options.get(k)]
    if missing:
        raise ValueError(f"the {task} task needs {', '.join(missing)}")
    return out_channels, {k: options[k] for k in t.head_options}
