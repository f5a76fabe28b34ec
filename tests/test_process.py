"""``bindense.process``: freed activations stay in the heap (no page faults when a step re-allocates them); idle
OpenMP threads spin briefly, then sleep, unless the environment says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bindense import process

# a training step in miniature: 160 MiB of tensors live at once (40 of 4 MiB, or with "large" 4 of 40 MiB, above
# glibc's largest mmap threshold), then all freed; page faults of 3 repeats, counted after 2 warm-up repeats, in a
# fresh process (the setting is process-wide). The heap takes a few repeats to settle into the large blocks'
# layout, so "large" warms up with 5.
SCRIPT = """
import resource, sys
from bindense.process import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
import torch
count, size, warm = (4, 10 << 20, 5) if sys.argv[2] == "large" else (40, 1 << 20, 2)
def step():
    xs = [torch.ones(size) for _ in range(count)]
    del xs
for _ in range(warm):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, env: dict[str, str] | None = None, blocks: str = "small") -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, blocks], capture_output=True, text=True, check=True, env=env
    )
    applied, count = out.stdout.split()
    return applied == "1", int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_removes_the_page_faults_of_repeated_steps(monkeypatch) -> None:
    monkeypatch.delenv(process.ENV_SWITCH, raising=False)
    applied, kept = faults("keep")
    assert applied
    # 3 repeats touch 3 x 40,960 pages: with glibc's defaults most runs fault about a third of them in again
    # (the 160 MiB freed at the top of the heap is returned to the system); kept: a few tensors at most
    assert kept < 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_all_keeps_blocks_above_the_largest_mmap_threshold() -> None:
    # 3 repeats x 4 blocks x 10,240 pages: mapped afresh every time by default (mmap above 32 MiB), kept with "all"
    _, default = faults("keep", {**os.environ, process.ENV_SWITCH: "1"}, "large")
    applied, kept = faults("keep", {**os.environ, process.ENV_SWITCH: "all"}, "large")
    assert applied
    assert default > 100_000
    assert kept < 4096


def test_unknown_switch_value_is_an_error(monkeypatch) -> None:
    monkeypatch.setenv(process.ENV_SWITCH, "yes")
    with pytest.raises(ValueError, match="BINDENSE_KEEP_FREED_MEMORY='yes': expected one of 0, 1, all"):
        process.keep_freed_memory()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_switch_off_keeps_glibc_defaults(monkeypatch) -> None:
    env = {**os.environ, process.ENV_SWITCH: "0"}
    applied, _ = faults("keep", env)
    assert not applied


def test_openmp_defaults_spin_briefly_then_sleep(monkeypatch) -> None:
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    chosen = process.openmp_wait_defaults()
    assert chosen == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": str(process.SPIN_COUNT)}
    assert {k: os.environ[k] for k in chosen} == chosen


@pytest.mark.parametrize("name, value", [("OMP_WAIT_POLICY", "PASSIVE"), ("GOMP_SPINCOUNT", "0")])
def test_openmp_defaults_leave_a_users_setting_alone(monkeypatch, name: str, value: str) -> None:
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(name, value)
    assert process.openmp_wait_defaults() == {}
    assert os.environ[name] == value
    other = "GOMP_SPINCOUNT" if name == "OMP_WAIT_POLICY" else "OMP_WAIT_POLICY"
    assert other not in os.environ
