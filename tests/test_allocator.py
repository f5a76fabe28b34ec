"""``bindense.allocator``: freed activations stay in the heap (no page faults when a step re-allocates them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bindense import allocator

# a training step in miniature: 160 MiB of tensors live at once, then all freed; page faults of 3 repeats, counted
# after 2 warm-up repeats, in a fresh process (the setting is process-wide)
SCRIPT = """
import resource, sys
from bindense.allocator import keep_freed_memory
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
    monkeypatch.delenv(allocator.ENV_SWITCH, raising=False)
    applied, kept = faults("keep")
    assert applied
    # 3 repeats touch 3 x 40,960 pages: with glibc's defaults most runs fault about a third of them in again
    # (the 160 MiB freed at the top of the heap is returned to the system); kept: a few tensors at most
    assert kept < 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_switch_off_keeps_glibc_defaults(monkeypatch) -> None:
    import os

    env = {**os.environ, allocator.ENV_SWITCH: "0"}
    applied, _ = faults("keep", env)
    assert not applied
