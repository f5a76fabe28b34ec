"""Bit-packed binary checkpoints (``.bdn``), their loader and binary inference kernels (docs/DEPLOY.md)."""

from bindense.export.bits import pack_signs, pack_words, popcount, unpack_signs
from bindense.export.container import FORMAT_VERSION, MAGIC, PackedFormatError, read_container, read_header
from bindense.export.kernels import PackedBinaryConv2d, dab_bits
from bindense.export.packed import (
    KERNELS,
    PackedWeight,
    binary_units,
    build_model_from_config,
    decode_binary_weight,
    encode_binary_weight,
    export_packed,
    load_packed,
)

__all__ = [
    "FORMAT_VERSION",
    "KERNELS",
    "MAGIC",
    "PackedBinaryConv2d",
    "PackedFormatError",
    "PackedWeight",
    "binary_units",
    "build_model_from_config",
    "dab_bits",
    "decode_binary_weight",
    "encode_binary_weight",
    "export_packed",
    "load_packed",
    "pack_signs",
    "pack_words",
    "popcount",
    "read_container",
    "read_header",
    "unpack_signs",
]
