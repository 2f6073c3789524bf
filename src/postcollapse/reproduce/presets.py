"""The figures and their presets, as data: one :class:`FigureConfig` per (preset, figure).

``quick`` runs everything on 2 CPU cores in minutes; ``paper`` follows the paper's settings
(a GPU); ``test`` (hidden from the CLI help) is the test suite's tiny run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType

from postcollapse._checks import check_int_at_least
from postcollapse.reproduce.prose import titles

__all__ = ["FIGURES", "PRESETS", "PRESET_TABLE", "FigureConfig", "figure_config"]

FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5")
PRESETS = ("quick", "paper", "test")


@dataclass(frozen=True)
class FigureConfig:
    """Everything that defines one figure's sweep (it is written to summary.json).

    ``n_grid`` log-spaced betas from ``grid_lo * beta_{d1}*`` to ``grid_hi * beta_1*``, plus
    ``bracket`` factors times each of the first ``bracket_modes`` thresholds (a finer look
    where collapse is predicted). ``fig3`` uses :func:`sample_betas` instead.
    """

    name: str
    data: str
    model: str
    sigma: str
    hidden: int
    latent_dim: int = 5
    lr: float = 1e-3
    optimizer: str = "adam"
    dtype: str = "float32"
    eval_samples: int = 64  # noise samples per row for the final loss (nonlinear decoder)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    n_grid: int = 16
    grid_lo: float = 0.1
    grid_hi: float = 2.0
    bracket: tuple[float, ...] = (0.93, 1.07)
    bracket_modes: int = 5
    seeds: tuple[int, ...] = (0,)
    n_data: int | None = None  # first n rows of the data set (None: all)
    n_images: int = 10  # fig3: prior samples per beta
    # The trainer's behaviour the presets were measured with: Adam at a fixed learning rate
    # (no plateau decay) and L-BFGS without the block Gauss-Newton scaling.
    lr_decay: float | None = None
    block_scaling: bool = False
    title: str = ""


# The linear model (fig4) is trained with L-BFGS in float64 in every preset: an exact loss
# on the full batch reaches the global minimum, where Adam at a fixed lr only hovers around
# it (benchmarks/README.md has the measurements).
_LINEAR = {"model": "linear", "optimizer": "lbfgs", "dtype": "float64"}
_SYNTHETIC = {"data": "synthetic", "sigma": "linear", "hidden": 8}
_MNIST = {"data": "mnist", "model": "relu", "sigma": "linear"}

_QUICK_NL = {**_SYNTHETIC, "lr": 3e-3, "steps": 3000, "batch_size": 500, "n_grid": 12,
             "bracket_modes": 2}
_QUICK_MNIST = {**_MNIST, "hidden": 128, "lr": 1e-3, "steps": 3000, "batch_size": 256,
                "eval_samples": 8}
# The paper: Adam, lr 1e-3 (MNIST 1e-4), hidden 8 (MNIST 2048), "after convergence": long
# runs that stop early once the loss is flat (the sweep's tol).
_PAPER = {**_SYNTHETIC, "lr": 1e-3, "steps": 50000, "batch_size": None, "n_grid": 24,
          "bracket_modes": 5}
_PAPER_MNIST = {**_MNIST, "hidden": 2048, "lr": 1e-4, "epochs": 300, "batch_size": 128,
                "eval_samples": 64}
_TEST = {"lr": 1e-2, "steps": 100, "batch_size": 500, "n_grid": 4, "bracket_modes": 1,
         "data": "synthetic", "sigma": "linear", "hidden": 4}
_TEST_MNIST = {**_MNIST, "hidden": 16, "lr": 1e-3, "steps": 30, "batch_size": 100,
               "n_data": 300, "eval_samples": 2}

#: preset -> figure -> FigureConfig fields (name and title are added by figure_config).
PRESET_TABLE = MappingProxyType({
    "quick": {
        "fig1": {**_QUICK_NL, "model": "relu"},
        "fig2": {**_QUICK_MNIST, "n_grid": 8, "bracket_modes": 2},
        "fig3": _QUICK_MNIST,
        "fig4": {**_SYNTHETIC, **_LINEAR, "steps": 1500, "n_grid": 12, "bracket_modes": 5},
        "fig5": {**_QUICK_NL, "model": "tanh"},
    },
    "paper": {
        "fig1": {**_PAPER, "model": "relu"},
        "fig2": {**_PAPER_MNIST, "n_grid": 16, "bracket_modes": 5},
        "fig3": _PAPER_MNIST,
        "fig4": {**_PAPER, **_LINEAR, "steps": 5000},
        "fig5": {**_PAPER, "model": "tanh"},
    },
    "test": {
        "fig1": {**_TEST, "model": "relu"},
        "fig2": {**_TEST_MNIST, "n_grid": 3, "bracket_modes": 1},
        "fig3": {**_TEST_MNIST, "n_images": 4},
        "fig4": {**_TEST, **_LINEAR, "batch_size": None},
        "fig5": {**_TEST, "model": "tanh"},
    },
})


def figure_config(fig: str, preset: str = "quick", *, seeds: int | None = None) -> FigureConfig:
    """The configuration of ``fig`` ("fig1".."fig5") under ``preset``; ``seeds`` overrides
    the number of seeds (seeds 0 .. seeds-1)."""
    if fig not in FIGURES:
        raise ValueError(f"figure must be one of {', '.join(FIGURES)} or 'all', got {fig!r}")
    if preset not in PRESET_TABLE:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    cfg = FigureConfig(name=fig, title=titles()[fig], **PRESET_TABLE[preset][fig])
    if seeds is not None:
        cfg = replace(cfg, seeds=tuple(range(check_int_at_least("seeds", seeds, 1))))
    return cfg
