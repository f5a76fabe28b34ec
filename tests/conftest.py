"""Test-wide settings: idle OpenMP threads sleep instead of spinning (a spinning pool slows CPU tests many-fold
whenever another process shares the cores); set before torch is imported by any test module."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test: the tiny models of the tests run faster without OpenMP overhead."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
