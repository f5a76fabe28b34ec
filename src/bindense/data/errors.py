"""Errors raised by the data layer: each one names the file (or the layout) that is wrong.

They subclass the matching builtin (``FileNotFoundError``, ``OSError``, ``ValueError``) so generic
handlers keep working, and :class:`DataError` so callers can catch every data problem at once.
"""

from __future__ import annotations


class DataError(Exception):
    """Base class of every error of the data layer."""


class DatasetLayoutError(DataError, FileNotFoundError):
    """A dataset root, split file or listed file is missing: the message shows the expected layout."""


class CorruptFileError(DataError, OSError):
    """A file exists but cannot be decoded (corrupt, truncated, wrong format)."""


class LabelRangeError(DataError, ValueError):
    """A label map holds values outside the label set of its dataset."""


class ShapeMismatchError(DataError, ValueError):
    """An image and one of its targets (or a target and its expected shape) disagree in size."""


def layout_error(
    dataset: str, problem: str, layout: str, hint: str, missing: list[str] | None = None
) -> DatasetLayoutError:
    """Build a :class:`DatasetLayoutError` whose message explains the problem, the layout and the fix.

    Args:
        dataset: human name of the dataset, e.g. ``"ADE20K"``.
        problem: what is wrong, e.g. ``"root '/data/ade' does not exist"``.
        layout: the expected directory tree (multi-line).
        hint: how to obtain / prepare the data (prepare script, official source, synthetic stand-in).
        missing: optional list of missing paths; the first few are shown.
    """
    lines = [f"{dataset}: {problem}."]
    if missing:
        shown = "\n".join(f"  {p}" for p in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        lines.append(f"Missing ({len(missing)}):\n{shown}{more}")
    lines.append(f"Expected layout:\n{layout.rstrip()}")
    lines.append(hint.rstrip())
    return DatasetLayoutError("\n".join(lines))

