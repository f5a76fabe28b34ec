"""Model zoo: ConvNeXt (three layouts) and ViT-S/14 backbones, UperNet and DPT decoders, task heads.

Everything is built by :func:`build_model` from a method spec (conf/method/*.yaml -> :class:`MethodSpec`),
which decides every conv through :meth:`MethodSpec.conv`.
"""

from bindense.models.build import WIDTHS, DenseModel, build_model
from bindense.models.convnext import ConvNeXt, load_convnext_checkpoint
from bindense.models.dpt import DPT
from bindense.models.heads import HEADS, DenseHead, DepthHead, PredictionConv, SegHead, make_head
from bindense.models.spec import MethodSpec, make_act
from bindense.models.upernet import UperNet
from bindense.models.vit import MatMul, ViT

__all__ = [
    "DPT",
    "WIDTHS",
    "ConvNeXt",
    "DenseModel",
    "DenseHead",
    "DepthHead",
    "HEADS",
    "MatMul",
    "MethodSpec",
    "PredictionConv",
    "SegHead",
    "UperNet",
    "ViT",
    "build_model",
    "make_head",
    "load_convnext_checkpoint",
    "make_act",
]
