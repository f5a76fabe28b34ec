"""File readers shared by the dataset modules; every failure names the file.

All readers return numpy arrays in a fixed convention:
RGB images ``uint8 (H, W, 3)``, label maps integer ``(H, W)``, float maps ``float32``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from bindense.data.errors import CorruptFileError, LabelRangeError, ShapeMismatchError

PathLike = str | os.PathLike


def read_rgb(path: PathLike) -> np.ndarray:
    """Decode an RGB image (any format PIL reads) to ``uint8 (H, W, 3)``; truncation is an error."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError as e:
        raise CorruptFileError(f"image file '{path}' does not exist") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise CorruptFileError(f"cannot decode image '{path}': {e}") from e
    return arr


def read_png_array(path: PathLike) -> np.ndarray:
    """Decode a single-channel PNG (8/16-bit, grayscale or palette indices) to an integer array."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L", "I;16", "I;16B", "I;16L", "I", "1"):
                arr = np.asarray(im)
            else:
                raise CorruptFileError(
                    f"label/depth PNG '{path}' has mode {im.mode}; expected a single-channel (L, P or 16-bit) image"
                )
    except CorruptFileError:
        raise
    except FileNotFoundError as e:
        raise CorruptFileError(f"file '{path}' does not exist") from e
    except Exception as e:
        raise CorruptFileError(f"cannot decode PNG '{path}': {e}") from e
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def read_npy(path: PathLike, dtype: type = np.float32) -> np.ndarray:
    """Load a ``.npy`` array (no pickles) and cast it to ``dtype``."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError as e:
        raise CorruptFileError(f"file '{path}' does not exist") from e
    except Exception as e:
        raise CorruptFileError(f"cannot load numpy array '{path}': {e}") from e
    if not isinstance(arr, np.ndarray):
        raise CorruptFileError(f"'{path}' does not hold a single numpy array")
    return arr.astype(dtype, copy=False)


def read_mat(path: PathLike) -> dict:
    """Load a MATLAB v5 ``.mat`` file with :func:`scipy.io.loadmat` (``squeeze_me=True``)."""
    from scipy.io import loadmat  # local: scipy is only needed for PASCAL-Context files

    try:
        return loadmat(path, squeeze_me=True, struct_as_record=False)
    except FileNotFoundError as e:
        raise CorruptFileError(f"file '{path}' does not exist") from e
    except Exception as e:
        raise CorruptFileError(f"cannot load MATLAB file '{path}': {e}") from e


def label_lut(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """Lookup table ``raw value -> label``; raw values absent from ``mapping`` map to -1 (invalid)."""
    lut = np.full(size, -1, dtype=np.int16)
    for raw, lab in mapping.items():
        lut[raw] = lab
    return lut


def apply_lut(raw: np.ndarray, lut: np.ndarray, path: PathLike, what: str = "label") -> np.ndarray:
    """Map raw label values through ``lut`` to ``uint8``; out-of-set values raise :class:`LabelRangeError`."""
    if raw.ndim != 2:
        raise ShapeMismatchError(f"{what} map '{path}' has shape {raw.shape}; expected (H, W)")
    raw = raw.astype(np.int64, copy=False)
    bad = (raw < 0) | (raw >= len(lut))
    if not bad.any():
        out = lut[raw]
        bad = out < 0
    if bad.any():
        values = np.unique(raw[bad])[:10].tolist()
        allowed = np.flatnonzero(lut >= 0)
        raise LabelRangeError(
            f"{what} map '{path}' holds values {values} outside the label set (allowed raw values: {_ranges(allowed)})"
        )
    return out.astype(np.uint8)


def _ranges(values: Iterable[int]) -> str:
    """Compact text of an integer set: ``0..40, 255``."""
    vals = sorted(int(v) for v in values)
    parts, start = [], None
    for i, v in enumerate(vals):
        if start is None:
            start = v
        if i + 1 == len(vals) or vals[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}..{v}")
            start = None
    return ", ".join(parts)


def check_same_size(image_shape: Sequence[int], arr: np.ndarray, image_path: PathLike, path: PathLike) -> None:
    """Raise :class:`ShapeMismatchError` unless ``arr`` has the image's height and width."""
    if tuple(arr.shape[:2]) != tuple(image_shape[:2]):
        raise ShapeMismatchError(
            f"size mismatch: '{path}' is {arr.shape[0]}x{arr.shape[1]} but its image "
            f"'{image_path}' is {image_shape[0]}x{image_shape[1]}"
        )


def list_missing(paths: Iterable[PathLike]) -> list[str]:
    """Paths that do not exist, checked with one ``listdir`` per directory (fast for large sets)."""
    cache: dict[str, set[str]] = {}
    missing = []
    for p in paths:
        d, name = os.path.split(os.fspath(p))
        if d not in cache:
            try:
                cache[d] = set(os.listdir(d or "."))
            except OSError:
                cache[d] = set()
        if name not in cache[d]:
            missing.append(os.fspath(p))
    return missing


def write_png(path: PathLike, arr: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write an 8/16-bit single-channel (optionally palette) or RGB PNG, creating parent dirs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == np.uint16:
        im = Image.fromarray(arr)
    else:
        im = Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8)))
    if palette is not None:  # an "L" image becomes "P" with the same indices
        im.putpalette(palette.astype(np.uint8).ravel().tolist())
    im.save(path)


def write_jpg(path: PathLike, rgb: np.ndarray, quality: int = 92) -> None:
    """Write an RGB ``uint8`` image as JPEG, creating parent dirs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, quality=quality)


def write_split_lists(directory: PathLike, entries: Mapping[str, Sequence[str]]) -> None:
    """One ``<directory>/<split>.txt`` per split, a sample name per line (the split files of VOC-style layouts)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, names in entries.items():
        (directory / f"{split}.txt").write_text("\n".join(names) + "\n")
