"""Batched beta x seed sweeps: train K VAEs as one model, report one row per member.

``sweep(data, betas=..., ...) -> SweepResult``; ``load_sweep(out_dir)`` reloads a finished one.
"""

from postcollapse.train._optim import BatchedLBFGS, MaskedAdam
from postcollapse.train.sweep import (
    LOSS_PATHS,
    OPTIMIZERS,
    SweepResult,
    load_sweep,
    result_columns,
    sweep,
)

__all__ = [
    "sweep",
    "SweepResult",
    "load_sweep",
    "result_columns",
    "OPTIMIZERS",
    "LOSS_PATHS",
    "MaskedAdam",
    "BatchedLBFGS",
]
