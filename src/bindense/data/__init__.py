"""Datasets in their official on-disk formats, synthetic scenes, augmentation pipelines, DataModule.

Sample contract (only the selected tasks appear):

- ``image``   float32 (3, H, W), ImageNet-normalised
- ``seg``     int64 (H, W), ignore = 255;      ``parts`` int64 (H, W), ignore = 255
- ``depth``   float32 (1, H, W), metres, 0 = invalid
- ``normals`` float32 (3, H, W), unit vectors (x right, y up, z towards the viewer), 0 = invalid
- ``edge``    float32 (1, H, W) in {0, 1};     ``sal`` float32 (1, H, W) in {0, 1}
- ``meta``    {"name": str, "orig_size": (H, W)} (size of the image on disk)
"""

from bindense.data.ade20k import ADE20KDataset
from bindense.data.base import DenseDataset
from bindense.data.bts import BTSDepthDataset, KITTIDepthDataset, NYUDepthDataset
from bindense.data.datamodule import DenseDataModule
from bindense.data.errors import (
    CorruptFileError,
    DataError,
    DatasetLayoutError,
    LabelRangeError,
    ShapeMismatchError,
)
from bindense.data.nyud_mt import NYUDMTDataset
from bindense.data.pascal_context_mt import PascalContextMTDataset
from bindense.data.formats import FORMATS, Format, get_format
from bindense.data.render import generate_sample
from bindense.data.synthetic import ensure_synthetic, write_synthetic
from bindense.data.transforms import IMAGENET_MEAN, IMAGENET_STD, DensePipeline
from bindense.data.voc import VOCSegDataset

__all__ = [
    "ADE20KDataset",
    "BTSDepthDataset",
    "CorruptFileError",
    "DataError",
    "DatasetLayoutError",
    "DenseDataModule",
    "DenseDataset",
    "FORMATS",
    "Format",
    "DensePipeline",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KITTIDepthDataset",
    "LabelRangeError",
    "NYUDMTDataset",
    "NYUDepthDataset",
    "PascalContextMTDataset",
    "ShapeMismatchError",
    "VOCSegDataset",
    "ensure_synthetic",
    "get_format",
    "generate_sample",
    "write_synthetic",
]
