"""Test-wide settings: idle OpenMP threads sleep instead of spinning (a spinning pool slows CPU tests many-fold
whenever another process shares the cores); set before torch is imported by any test module."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
