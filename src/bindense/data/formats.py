"""The registry of on-disk dataset formats: one place that maps a format name to its reader and its writer.

A format (``data.layout`` in ``conf/data/*.yaml``) is a directory layout of a public dataset. Its
:class:`Format` names the :class:`~bindense.data.base.DenseDataset` subclass that reads it and the two
functions that write synthetic scenes into it (one sample, then the split / index files); both live in the
reader's module. The formats of this package are registered at the end of this module; a format defined
elsewhere (a plugin, a test) is one :func:`register_format` call. The datamodule, the synthetic writer and
``scripts/make_synthetic.py`` ask this registry and nothing else. docs/FORMATS.md says how to add a format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bindense.data import ade20k, bts, nyud_mt, pascal_context_mt, voc
from bindense.data.base import DenseDataset
from bindense.registry import Registry

#: ``(root, split, index, rendered sample) -> entry``: writes one sample, returns its line of the split lists
SampleWriter = Callable[[Path, str, int, Mapping[str, Any]], str]
#: ``(root, {split: [entry, ...]})``: writes the split lists / index files once every sample is written
IndexWriter = Callable[[Path, Mapping[str, list[str]]], None]


@dataclass(frozen=True)
class Format:
    """One on-disk dataset format.

    Attributes:
        name: the ``data.layout`` value.
        reader: the dataset class; it is called as ``reader(root, split, tasks=, transform=, ignore_index=, ...)``.
        write_sample / write_index: write rendered synthetic scenes in this format (:mod:`bindense.data.synthetic`).
        num_classes: default segmentation classes, passed as ``num_classes=`` (None: the reader takes none).
        class_names: the official class names, used when ``num_classes`` equals their count.
        parts: whether the reader takes ``num_parts=`` (human parts).
    """

    name: str
    reader: type[DenseDataset]
    write_sample: SampleWriter
    write_index: IndexWriter
    num_classes: int | None = None
    class_names: Sequence[str] | None = None
    parts: bool = False


#: every format by name, with the short names accepted wherever a format name is (fill it with
#: :func:`register_format`)
FORMATS: Registry[Format] = Registry(
    "data layout", "data.layout", aliases={"nyu": "bts_nyu", "kitti": "bts_kitti", "pascal": "pascal_context_mt"}
)


def register_format(fmt: Format) -> Format:
    """Add ``fmt`` to :data:`FORMATS`; ``ValueError`` when its name is taken. Returns ``fmt``."""
    return FORMATS.register(fmt.name, fmt)


def get_format(name: str) -> Format:
    """The format called ``name`` (or one of its aliases); ``ValueError`` naming the choices otherwise."""
    return FORMATS.lookup(name)


for _format in (
    Format("ade20k", ade20k.ADE20KDataset, ade20k.write_synthetic_sample, ade20k.write_synthetic_index, 150),
    Format("voc", voc.VOCSegDataset, voc.write_synthetic_sample, voc.write_synthetic_index, 21, voc.VOC_CLASSES),
    Format("bts", bts.BTSDepthDataset, bts.write_nyu_sample, bts.write_nyu_index),
    Format("bts_nyu", bts.NYUDepthDataset, bts.write_nyu_sample, bts.write_nyu_index),
    Format("bts_kitti", bts.KITTIDepthDataset, bts.write_kitti_sample, bts.write_kitti_index),
    Format(
        "nyud_mt",
        nyud_mt.NYUDMTDataset,
        nyud_mt.write_synthetic_sample,
        nyud_mt.write_synthetic_index,
        40,
        nyud_mt.NYUD40_CLASSES,
    ),
    Format(
        "pascal_context_mt",
        pascal_context_mt.PascalContextMTDataset,
        pascal_context_mt.write_synthetic_sample,
        pascal_context_mt.write_synthetic_index,
        21,
        voc.VOC_CLASSES,
        parts=True,
    ),
):
    register_format(_format)
