"""Compile (once, cached) and load the C++ extension of :mod:`bindense.native`.

The extension is built on first use with ``torch.utils.cpp_extension.load`` (ninja from PyPI, the system g++),
against the installed torch, into a folder of the Python environment (``<sys.prefix>/var/bindense-native/<torch
and Python versions>``, else ``~/.cache/bindense/native/...``; ``$BINDENSE_BUILD_DIR`` overrides); torch rebuilds
it there whenever a source file changes. ``python -m bindense.native`` builds it verbosely. Where no
compiler (or ninja) exists, :func:`extension` returns ``None`` after one warning, and the pure-torch kernels take
over, unless ``BINDENSE_REQUIRE_NATIVE=1`` (CI), where the failure is raised.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("binconv.cpp", "isa_generic.cpp", "isa_avx2.cpp", "isa_avx512.cpp", "train_ops.cpp")
_state: dict[str, ModuleType | None] = {}


def required() -> bool:
    """``BINDENSE_REQUIRE_NATIVE=1``: a failed native build is an error, not a fallback."""
    return os.environ.get("BINDENSE_REQUIRE_NATIVE", "0") not in ("", "0", "false", "False")


def build_dir() -> Path:
    """Where the compiled extension is cached (one per environment, torch and Python version)."""
    if os.environ.get("BINDENSE_BUILD_DIR"):
        path = Path(os.environ["BINDENSE_BUILD_DIR"])
    else:
        tag = f"torch{torch.__version__.replace('+', '_')}-py{sys.version_info[0]}{sys.version_info[1]}"
        path = Path(sys.prefix) / "var" / "bindense-native" / tag
        if not os.access(sys.prefix, os.W_OK):
            path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bindense" / "native" / tag
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ninja_on_path() -> None:
    """torch calls ``ninja`` through PATH; a venv's ninja lives next to its python, which may not be on PATH."""
    try:
        import ninja  # noqa: PLC0415

        bin_dir = getattr(ninja, "BIN_DIR", None)
    except ImportError:
        bin_dir = None
    for d in (bin_dir, str(Path(sys.executable).parent)):
        if d and d not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = d + os.pathsep + os.environ.get("PATH", "")


def _compile(verbose: bool) -> ModuleType:
    from torch.utils.cpp_extension import load  # noqa: PLC0415

    _ninja_on_path()
    return load(
        name="bindense_native",
        sources=[str(CSRC / s) for s in SOURCES],
        extra_cflags=["-O3", "-fopenmp", "-fno-math-errno", "-Wno-psabi"],  # psabi: GCC vector types, inline only
        extra_ldflags=["-fopenmp"],
        build_directory=str(build_dir()),
        verbose=verbose,
    )


def extension(verbose: bool = False) -> ModuleType | None:
    """The compiled extension module, or ``None`` (with one warning) where it cannot be built."""
    if "mod" not in _state:
        try:
            _state["mod"] = _compile(verbose)
        except Exception as e:  # noqa: BLE001 - any build failure means: fall back (or raise in CI)
            if required():
                raise RuntimeError(
                    "bindense.native: the C++ extension failed to build and BINDENSE_REQUIRE_NATIVE=1 is set "
                    f"(needs g++ and the `ninja` package): {e}"
                ) from e
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            warnings.warn(
                "bindense.native: C++ extension unavailable, using the slow pure-torch binary kernels "
                f"(needs g++ and the `ninja` package; reason: {reason})",
                RuntimeWarning,
                stacklevel=3,
            )
            _state["mod"] = None
    return _state["mod"]

