"""ViT-S/14 backbone with binary linears and softmax-aware binary attention (docs/METHODS.md, section 3).

Full precision: patch embedding, class token, position embedding, LayerNorms, LayerScale. Binary (per the
spec's ``linear_activation`` / ``linear_weight``): qkv, proj, fc1, fc2, and the attention matmuls
(q, k, v binarized with the same activation binarizer; the attention map is ``1[P >= 0.25 rowmax(P)]``
forward, backward through the softmax P, and multiplies the binary v). The MLP activation is the spec's
``vit_mlp_act``: GELU (the authors' released code) or LearnableBias -> PReLU (their paper-time code).

Each input side is floored to a multiple of 28 (bilinear resize, as the authors' code), so that the DPT Down
level is exact; the position grid is interpolated the DINOv2 way (scale factor ``(n + 0.1) / side``). The
features are the outputs of the last four blocks after the final LayerNorm, class token dropped, as
``(B, C, H/14, W/14)`` maps named ``stage1..stage4``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bindense.models.spec import MethodSpec

#: DINOv2's offset added to the target grid side before computing the interpolation scale factor
POS_OFFSET = 0.1


def floor_to_multiple(size: int, multiple: int) -> int:
    """``floor(size / multiple) * multiple``, at least ``multiple`` (the authors' DPT input size rule)."""
    return max(multiple, size // multiple * multiple)


def interpolate_pos_grid(grid: Tensor, h: int, w: int, offset: float = POS_OFFSET) -> Tensor:
    """Bicubic resize of a ``(1, C, side, side)`` position grid to ``(h, w)`` the DINOv2 way.

    The scale factors are ``(h + offset) / side`` and ``(w + offset) / side``; PyTorch maps output pixel ``i``
    to source ``(i + 0.5) / scale - 0.5``, so the offset shifts the sampling slightly against a resize by size.
    """
    side_h, side_w = grid.shape[-2:]
    out = F.interpolate(
        grid, scale_factor=((h + offset) / side_h, (w + offset) / side_w), mode="bicubic", align_corners=False
    )
    if tuple(out.shape[-2:]) != (h, w):
        raise ValueError(f"position grid {side_h}x{side_w} -> {tuple(out.shape[-2:])}, expected {(h, w)}")
    return out


class MatMul(nn.Module):
    """``a @ b`` as a module so that complexity hooks see it; ``input_bits``/``weight_bits`` are the operands'."""

    def __init__(self, a_bits: int = 32, b_bits: int = 32) -> None:
        super().__init__()
        self.input_bits, self.weight_bits = a_bits, b_bits

    @property
    def is_binary(self) -> bool:
        return self.input_bits == 1 and self.weight_bits == 1

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b

    @staticmethod
    def macs(inputs: tuple[Tensor, ...], output: Tensor) -> int:
        """Multiply-accumulates of one call: output elements times the contracted length."""
        return output.numel() * inputs[0].shape[-1]


class Attention(nn.Module):
    """Multi-head self-attention; binary (BiViT softmax-aware) when the spec's linears are binary.

    Binary: ``A = 1[P >= threshold * rowmax(P)]`` forward (gradient straight through to the softmax P), then
    the binary matmul ``A v``. With ``normalize`` (default ``method.attention_normalize``, true) each row of
    ``A v`` is divided by its number of selected keys, a per-row scale after the binary matmul (like the
    softmax rows summing to one): it keeps the output in [-1, 1], where the next binarizer's ApproxSign has
    a gradient (integer sums of +-1 would block almost all of it); false is the authors' literal ``A v``.
    """

    def __init__(
        self, spec: MethodSpec, dim: int, num_heads: int, threshold: float = 0.25, normalize: bool | None = None
    ) -> None:
        super().__init__()
        self.num_heads, self.scale, self.threshold = num_heads, (dim // num_heads) ** -0.5, threshold
        self.normalize = spec.attention_normalize if normalize is None else normalize
        self.qkv = spec.linear(dim, 3 * dim)
        self.proj = spec.linear(dim, dim)
        self.q_binarizer = spec.token_binarizer(dim)
        self.k_binarizer = spec.token_binarizer(dim)
        self.v_binarizer = spec.token_binarizer(dim)
        bits = self.q_binarizer.bits
        self.binary = bits == 1
        self.qk = MatMul(bits, bits)
        self.av = MatMul(bits, bits)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (
            binarize(t).reshape(B, N, self.num_heads, -1).transpose(1, 2)
            for binarize, t in ((self.q_binarizer, q), (self.k_binarizer, k), (self.v_binarizer, v))
        )
        attn = (self.qk(q, k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        count = None
        if self.binary:  # forward 1[P >= t * rowmax P], straight-through backward to P
            hard = (attn >= self.threshold * attn.amax(dim=-1, keepdim=True)).to(attn.dtype)
            attn = attn + (hard - attn).detach()
            count = hard.sum(dim=-1, keepdim=True) if self.normalize else None
        out = self.av(attn, v)
        if count is not None:
            out = out / count
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class TokenPReLU(nn.Module):
    """LearnableBias -> PReLU on ``(B, N, C)`` tokens (per-channel bias init 0, PReLU slopes init 0.25)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.prelu = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu((x + self.bias).movedim(-1, 1)).movedim(1, -1)


MLP_ACTS = {"gelu": lambda channels: nn.GELU(), "prelu": TokenPReLU}


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))`` with the spec's ``vit_mlp_act`` between the binary linears."""

    def __init__(self, spec: MethodSpec, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = spec.linear(dim, hidden)
        self.act = MLP_ACTS[spec.vit_mlp_act](hidden)
        self.fc2 = spec.linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale: ``x + ls1(attn(n1(x)))``, ``x + ls2(mlp(n2(x)))``."""

    def __init__(self, spec: MethodSpec, dim: int, num_heads: int, mlp_ratio: float, layer_scale_init: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(spec, dim, num_heads)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(spec, dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """ViT with patch 14 (ViT-S/14 by default) returning the last four blocks as stride-14 feature maps.

    Args:
        spec: method spec (``linear_activation`` / ``linear_weight`` binarize the linears and attention).
        embed_dim, depth, num_heads, mlp_ratio: transformer size (ViT-S: 384, 12, 6, 4).
        patch_size: 14.
        pos_grid: side of the learned position-embedding grid (37 = 518 px, interpolated to the input).
        layer_scale_init: LayerScale init (1.0: identity at start, the model is trained from scratch).
        multiple: each input side is floored to a multiple of this (28).
    """

    def __init__(
        self,
        spec: MethodSpec,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        patch_size: int = 14,
        pos_grid: int = 37,
        layer_scale_init: float = 1.0,
        in_channels: int = 3,
        multiple: int = 28,
    ) -> None:
        super().__init__()
        if depth < 4:
            raise ValueError(f"the ViT needs at least 4 blocks (it returns the last four), got depth={depth}")
        self.embed_dim, self.patch_size, self.multiple = embed_dim, patch_size, multiple
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(spec, embed_dim, num_heads, mlp_ratio, layer_scale_init) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    @property
    def channels(self) -> dict[str, int]:
        return {f"stage{i}": self.embed_dim for i in range(1, 5)}

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """The size the ViT runs at: each side floored to a multiple of ``multiple`` (at least one)."""
        return floor_to_multiple(h, self.multiple), floor_to_multiple(w, self.multiple)

    def resize_input(self, x: Tensor) -> Tensor:
        """Bilinear resize (no antialiasing, like the authors' torchvision 0.16 ``resize``) to :meth:`input_size`."""
        size = self.input_size(*x.shape[-2:])
        if size == tuple(x.shape[-2:]):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def position_embedding(self, h: int, w: int) -> Tensor:
        cls_pos, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = int(math.isqrt(grid.shape[1]))
        if (h, w) != (side, side):
            grid = interpolate_pos_grid(grid.reshape(1, side, side, -1).permute(0, 3, 1, 2), h, w)
            grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([cls_pos, grid], dim=1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.patch_embed(self.resize_input(x))
        B, C, h, w = x.shape
        tokens = torch.cat([self.cls_token.expand(B, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        tokens = tokens + self.position_embedding(h, w)
        outs = []
        first = len(self.blocks) - 4
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i >= first:
                outs.append(self.norm(tokens)[:, 1:].transpose(1, 2).reshape(B, C, h, w))
        return {f"stage{i + 1}": f for i, f in enumerate(outs)}
