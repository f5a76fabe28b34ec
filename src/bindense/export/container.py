"""The ``.bdn`` container: magic, version, JSON header, aligned tensor payload, SHA-256 trailer.

Layout (all integers little-endian; docs/DEPLOY.md is the full specification)::

    offset 0   8 bytes   magic  b"\\x89BDN\\r\\n\\x1a\\n"
    offset 8   u32       format version (2)
    offset 12  u32       reserved flags (0)
    offset 16  u64       header length H in bytes
    offset 24  H bytes   header, UTF-8 JSON
    ...        zeros     padding to a multiple of 64
    payload    P bytes   the arrays, each starting at a multiple of 64 (offsets relative to the payload start)
    end        32 bytes  SHA-256 of every preceding byte

The reader verifies the checksum before it trusts anything else in the file, so a truncated or modified file is
rejected with :class:`PackedFormatError`, never loaded as a wrong model.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

MAGIC = b"\x89BDN\r\n\x1a\n"
FORMAT_VERSION = 2
ALIGN = 64
_PREAMBLE = struct.Struct("<8sIIQ")  # magic, version, flags, header length
_DIGEST = 32

#: dtype names used in the header <-> torch dtypes
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


class PackedFormatError(ValueError):
    """A ``.bdn`` file is not one, is truncated or modified (checksum), or has an unsupported version."""


def dtype_name(dtype: torch.dtype) -> str:
    for name, d in DTYPES.items():
        if d == dtype:
            return name
    raise PackedFormatError(f"dtype {dtype} cannot be stored in a .bdn file")


def _pad(n: int) -> int:
    return -n % ALIGN


@dataclass
class Array:
    """One stored array: its bytes and where they sit in the payload."""

    dtype: str
    shape: list[int]
    offset: int
    nbytes: int


def tensor_bytes(t: Tensor) -> bytes:
    """Raw little-endian bytes of a CPU tensor in C order (any dtype of :data:`DTYPES`)."""
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.view(torch.uint8).numpy().tobytes()


def write_container(path: str | os.PathLike, header: dict[str, Any], arrays: dict[str, Tensor]) -> int:
    """Write ``header`` (JSON-serialisable) and ``arrays`` to ``path``; returns the file size in bytes.

    The header gains ``arrays``: ``{name: {dtype, shape, offset, nbytes}}`` and ``payload_bytes``.
    """
    index: dict[str, dict[str, Any]] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, t in arrays.items():
        data = tensor_bytes(t)
        index[name] = {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "offset": offset, "nbytes": len(data)}
        chunks += [data, b"\0" * _pad(len(data))]
        offset += len(data) + _pad(len(data))
    header = {**header, "arrays": index, "payload_bytes": offset}
    head = json.dumps(header, separators=(",", ":"), sort_keys=False).encode("utf-8")
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(head))
    digest = hashlib.sha256()
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        for block in (preamble, head, b"\0" * _pad(len(preamble) + len(head)), *chunks):
            digest.update(block)
            f.write(block)
        f.write(digest.digest())
    os.replace(tmp, path)  # never leave a half-written file under the final name
    return path.stat().st_size


def _fail(path: Path, why: str) -> PackedFormatError:
    return PackedFormatError(f"{path}: {why}")


def read_container(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Verify and read a ``.bdn`` file: ``(header, {name: tensor})``.

    Raises :class:`PackedFormatError` naming the problem: not a .bdn file, unsupported version, truncated,
    checksum mismatch (modified or corrupted), or an inconsistent index.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < _PREAMBLE.size + _DIGEST or data[:8] != MAGIC:
        if data[: min(len(data), 8)] == MAGIC[: min(len(data), 8)] and len(data) < _PREAMBLE.size + _DIGEST:
            raise _fail(path, f"truncated .bdn file ({len(data)} bytes)")
        raise _fail(path, "not a bindense packed model (.bdn): bad magic bytes")
    magic, version, _flags, head_len = _PREAMBLE.unpack_from(data)
    body, stored = data[:-_DIGEST], data[-_DIGEST:]
    actual = hashlib.sha256(body).digest()
    if actual != stored:
        expected_size = _expected_size(data, head_len)
        real_len = _json_length(data)
        if real_len is not None and real_len != head_len:
            why = f"corrupt header: its length field says {head_len} bytes, the JSON header has {real_len}"
        elif expected_size is not None and expected_size != len(data):
            relation = "truncated" if len(data) < expected_size else "extended"
            why = f"{relation}: {len(data)} bytes, the file should have {expected_size}"
        else:
            why = "the file was modified or corrupted"
        raise _fail(path, f"SHA-256 checksum mismatch ({why}); refusing to load it")
    if version != FORMAT_VERSION:
        raise _fail(
            path,
            (
                f"format version {version} is not supported (this bindense reads version {FORMAT_VERSION}; "
                "re-export the model with scripts/export.py)"
            ),
        )
    start = _PREAMBLE.size
    try:
        header = json.loads(data[start : start + head_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _fail(path, f"unreadable header: {err}") from err
    payload_start = start + head_len + _pad(start + head_len)
    payload = memoryview(body)[payload_start:]
    if len(payload) != header.get("payload_bytes"):
        raise _fail(path, f"payload is {len(payload)} bytes, the header says {header.get('payload_bytes')}")
    tensors: dict[str, Tensor] = {}
    for name, entry in header["arrays"].items():
        a = Array(**entry)
        if a.dtype not in DTYPES or a.offset < 0 or a.offset + a.nbytes > len(payload):
            raise _fail(path, f"array {name!r} has an invalid index entry {entry}")
        raw = bytearray(payload[a.offset : a.offset + a.nbytes])
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        dtype = DTYPES[a.dtype]
        t = flat.to(torch.bool) if dtype == torch.bool else flat.view(dtype)
        tensors[name] = t.reshape(a.shape)
    return header, tensors


def _json_length(data: bytes) -> int | None:
    """Byte length of the JSON object that starts the header (ASCII, as written), or None if unreadable."""
    start = _PREAMBLE.size
    try:
        _, end = json.JSONDecoder().raw_decode(data[start : start + (1 << 24)].decode("ascii", errors="replace"))
    except ValueError:
        return None
    return end


def _expected_size(data: bytes, head_len: int) -> int | None:
    """File size the (unverified) header describes, for a clearer error message; None when unreadable."""
    start = _PREAMBLE.size
    if len(data) < start + head_len + _DIGEST:
        return start + head_len + _DIGEST  # not even the header is complete: at least this much
    try:
        header = json.loads(data[start : start + head_len].decode("utf-8"))
        payload_start = start + head_len + _pad(start + head_len)
        return payload_start + int(header["payload_bytes"]) + _DIGEST
    except Exception:  # noqa: BLE001 - the header itself may be what is damaged
        return None


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The verified JSON header of a ``.bdn`` file (checksum included)."""
    return read_container(path)[0]
