"""Speed and memory of a model config on the current device: training step, peak memory, inference latency.

Usage (Hydra overrides of ``conf/train.yaml`` select the model; only ``cfg.model`` is instantiated)::

    python scripts/benchmark.py model.width=nano method=bidense                 # one config
    python scripts/benchmark.py method=bidense --vs method=fp32_scratch         # two configs and their ratios
    python scripts/benchmark.py --compare-naive                                 # lean vs naive binarizers
    python scripts/benchmark.py method=bidense --packed                         # + bit-packed inference kernels
    python scripts/benchmark.py data=synthetic                                  # + data-loader throughput

``bindense.analysis.benchmark`` holds the measurements and documents them (docs/DEPLOY.md explains the method);
the last line printed is a JSON object, the full results are also written to ``--out``.
"""

from bindense.analysis.benchmark import main

if __name__ == "__main__":
    main()
