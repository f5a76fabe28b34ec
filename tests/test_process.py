"""``bindense.process``: freed activations stay in the heap (no page faults when a step re-allocates them); idle
OpenMP threads spin briefly, then sleep, unless the environment says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bindense import process

# a training step in miniature: 160 MiB of tensors live at once, then all freed; page faults of 3 repeats, counted
# after 2 warm-up repeats, in a fresh process (the setting is process-wide)
SCRIPT = """
import resource, sys
from bindense.process import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
import torch
def step():
    xs = [torch.ones(1 << 20) for _ in range(40)]
    del xs
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, env: dict[str, str] | None = None) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, env=env)
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
