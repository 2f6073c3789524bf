"""Batched beta x seed sweeps: train K VAEs as one model, report one row per member.

``sweep(data, betas=..., ...) -> SweepResult``; ``run_sweep(data, SweepConfig(...))`` takes
the options as one validated config; ``load_sweep(out_dir)`` reloads a finished sweep.

Layout: ``config`` (SweepConfig), ``data`` (input and per-step loss), ``trainers`` (Adam and
L-BFGS, ``TRAINERS``), ``optim`` (the batched optimisers), ``streams`` (per-seed batches and
noise), ``loop`` (the training loop and progress hooks), ``checkpoint``, ``evaluate``
(theory and result rows), ``results`` (SweepResult, columns, reading), ``sweep``.
"""

from postcollapse.train.config import LOSS_PATHS, OPTIMIZERS, SweepConfig
from postcollapse.train.loop import CheckInfo
from postcollapse.train.optim import BatchedLBFGS, MaskedAdam
from postcollapse.train.results import (
    SweepResult,
    load_sweep,
    parse_cell,
    parse_flag,
    result_columns,
)
from postcollapse.train.sweep import run_sweep, sweep
from postcollapse.train.trainers import TRAINERS, AdamTrainer, LBFGSTrainer, Trainer

__all__ = [
    "sweep",
    "run_sweep",
    "SweepConfig",
    "SweepResult",
    "load_sweep",
    "result_columns",
    "parse_cell",
    "parse_flag",
    "CheckInfo",
    "OPTIMIZERS",
    "LOSS_PATHS",
    "TRAINERS",
    "Trainer",
    "AdamTrainer",
    "LBFGSTrainer",
    "MaskedAdam",
    "BatchedLBFGS",
]
