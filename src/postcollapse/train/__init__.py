"""Batched beta x seed sweeps: train K VAEs as one model, report one row per member.

``sweep(data, betas=..., ...) -> SweepResult``; ``run_sweep(data, SweepConfig(...))`` takes
the options as one validated config; ``load_sweep(out_dir)`` reloads a finished sweep.

Layout: ``config`` (SweepConfig and the option choices), ``data`` (input and per-step
loss), ``trainers`` (Adam and L-BFGS, ``TRAINERS``), ``optim`` (the batched optimisers),
``streams`` (per-seed batches and noise), ``loop`` (the training loop and progress hooks),
``checkpoint``, ``evaluate`` (theory and result rows), ``results`` (SweepResult, columns,
reading), ``sweep``. The config and results names import without torch; the others load
their module (and torch) when first used.
"""

from importlib import import_module

from postcollapse.train.config import (
    DTYPE_CHOICES,
    DTYPES,
    LOSS_PATHS,
    OPTIMIZER_CHOICES,
    OPTIMIZERS,
    SweepConfig,
)
from postcollapse.train.results import (
    SweepResult,
    load_sweep,
    parse_cell,
    parse_flag,
    result_columns,
)
from postcollapse.train.sweep import run_sweep, sweep

_HOME = {
    "CheckInfo": "loop",
    "TRAINERS": "trainers",
    "Trainer": "trainers",
    "AdamTrainer": "trainers",
    "LBFGSTrainer": "trainers",
    "MaskedAdam": "optim",
    "BatchedLBFGS": "optim",
}

__all__ = [
    "sweep",
    "run_sweep",
    "SweepConfig",
    "SweepResult",
    "load_sweep",
    "result_columns",
    "parse_cell",
    "parse_flag",
    "OPTIMIZERS",
    "LOSS_PATHS",
    "DTYPES",
    "OPTIMIZER_CHOICES",
    "DTYPE_CHOICES",
    *_HOME,
]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'postcollapse.train' has no attribute {name!r}")
    value = getattr(import_module(f"postcollapse.train.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
