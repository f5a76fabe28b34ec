"""Speed and memory of a model config: ``python scripts/benchmark.py [overrides] [--vs ...] [--packed] ...``.

The measurements, their options and the usage examples are in :mod:`bindense.analysis.benchmark`
(``--help`` lists the options; docs/DEPLOY.md explains the method).
"""

from bindense.analysis.benchmark import main

if __name__ == "__main__":
    main()
