"""Speed and memory of a model config: ``python scripts/benchmark.py [overrides] [--vs ...] [--packed] ...``.

The measurements, their options and the usage examples are in :mod:`bindense.analysis.benchmark`
(``--help`` lists the options; docs/DEPLOY.md explains the method).
"""

from bindense.process import configure_process

configure_process()  # the process settings of train.py, before torch is imported: the step that training runs

from bindense.analysis.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
