"""Exact theory of the linear (conditional) VAE: moments, spectrum, thresholds, optimum.

Pure numpy/scipy; never imports torch or matplotlib. Conventions: docs/THEORY.md.
"""

from postcollapse.theory.loss import (
    FlatVAELoss,
    VAEGrad,
    origin_hessian,
    origin_hessian_min_eig,
    vae_loss,
    vae_loss_and_grad,
    vae_nll,
)
from postcollapse.theory.moments import Moments
from postcollapse.theory.optimum import (
    SIGMA_MODES,
    Optimum,
    learned_eta_dec2,
    min_loss,
    optimal_sigma2,
    optimum,
)
from postcollapse.theory.spectrum import (
    LEARN,
    Spectrum,
    active_modes,
    beta_interval,
    check_eta_dec,
    learned_thresholds,
    spectrum,
    thresholds,
)

__all__ = [
    "Moments",
    "Spectrum",
    "spectrum",
    "thresholds",
    "active_modes",
    "beta_interval",
    "learned_thresholds",
    "check_eta_dec",
    "LEARN",
    "Optimum",
    "optimum",
    "min_loss",
    "optimal_sigma2",
    "learned_eta_dec2",
    "SIGMA_MODES",
    "vae_loss",
    "vae_nll",
    "vae_loss_and_grad",
    "VAEGrad",
    "FlatVAELoss",
    "origin_hessian",
    "origin_hessian_min_eig",
]
