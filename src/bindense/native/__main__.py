"""``python -m bindense.native``: build the C++ extension now, verbosely (``make native``, CI); fails loudly."""

from bindense.native import build

mod = build.extension(verbose=True)
if mod is None:
    raise SystemExit("bindense.native: the C++ extension did not build (see the warning above)")
print(f"bindense.native: built {mod.__file__}; ISA paths on this CPU: {', '.join(mod.cpu_isas())}")
