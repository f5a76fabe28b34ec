"""LightningModules and training callbacks."""

from bindense.lit.callbacks import EpochSeed, PredictionPanels
from bindense.lit.dashboard import WandbDashboard
from bindense.lit.dense import DenseLitModule, NonFiniteLossError
from bindense.lit.diagnostics import BNNDiagnostics
from bindense.lit.losses import SegCrossEntropy, SILogLoss
from bindense.lit.multitask import MultiTaskLitModule

__all__ = [
    "BNNDiagnostics",
    "DenseLitModule",
    "EpochSeed",
    "MultiTaskLitModule",
    "NonFiniteLossError",
    "PredictionPanels",
    "SILogLoss",
    "SegCrossEntropy",
    "WandbDashboard",
]
