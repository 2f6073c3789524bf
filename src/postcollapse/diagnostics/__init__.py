"""Collapse diagnostics for any VAE: metrics, a streaming monitor, effective beta, gaps.

- :func:`effective_beta` / :func:`predict_modes` (numpy only): convert a loss convention
  (mean- or sum-reduced MSE, Gaussian NLL, ``kld_weight``, KL summed or averaged) into the
  paper's ``beta * eta_dec^2`` and predict which latent modes survive on given data;
  ``convention=NAME`` for the losses of pythae, PyTorch-VAE, the PyTorch and Keras examples
  (``LOSS_CONVENTIONS``).
- :class:`CollapseMonitor`, :func:`collapse_metrics`, :func:`kl_per_dim`,
  :func:`mutual_information` (torch): per-dimension KL, active units, (epsilon, delta)
  collapse rate, sigma statistics and an MI estimate from encoder outputs (mu, logvar).
- :func:`gap_to_optimum`, :func:`compare_active_modes`: a trained model against theory.
- :func:`mode_signal` (numpy): the posterior mean's signal along each data mode, the
  collapse diagnostic that still works under free bits (where per-latent KL does not).
- :func:`load_latents`: (mu, logvar) from an .npz or .csv file (the ``diagnose`` command).

The torch-based names are imported on first use, so ``effective_beta`` stays light.
"""

from __future__ import annotations

import importlib

from postcollapse.diagnostics._effective_beta import (
    BATCH_REDUCTIONS,
    BERNOULLI_EXPLANATION,
    KL_CONVENTIONS,
    LOSS_CONVENTIONS,
    NEAR_THRESHOLD_MARGIN,
    RECON_CONVENTIONS,
    BernoulliDecoderError,
    EffectiveBeta,
    LossConvention,
    ModePrediction,
    effective_beta,
    predict_modes,
)
from postcollapse.diagnostics._gap import (
    ActiveComparison,
    OptimumGap,
    compare_active_modes,
    gap_to_optimum,
)
from postcollapse.diagnostics._latents import load_latents
from postcollapse.diagnostics._modes import ModeSignal, mode_signal

_LAZY = {
    "CollapseMonitor": "_monitor",
    "CollapseSummary": "_monitor",
    "collapse_metrics": "_monitor",
    "kl_per_dim": "_monitor",
    "mutual_information": "_monitor",
}

__all__ = [
    "BATCH_REDUCTIONS",
    "BERNOULLI_EXPLANATION",
    "KL_CONVENTIONS",
    "LOSS_CONVENTIONS",
    "NEAR_THRESHOLD_MARGIN",
    "RECON_CONVENTIONS",
    "ActiveComparison",
    "BernoulliDecoderError",
    "LossConvention",
    "ModeSignal",
    "CollapseMonitor",
    "CollapseSummary",
    "EffectiveBeta",
    "ModePrediction",
    "OptimumGap",
    "collapse_metrics",
    "compare_active_modes",
    "effective_beta",
    "gap_to_optimum",
    "kl_per_dim",
    "load_latents",
    "mode_signal",
    "mutual_information",
    "predict_modes",
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"postcollapse.diagnostics.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'postcollapse.diagnostics' has no attribute {name!r}")
