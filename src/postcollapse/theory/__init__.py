"""Exact theory of the linear (conditional) VAE: moments, spectrum, thresholds, optimum.

Pure numpy/scipy; never imports torch or matplotlib. Conventions: ``docs/THEORY.md``.
"""

from postcollapse.theory.critical import (
    count_thresholds,
    freebits_thresholds,
    hierarchical_thresholds,
)
from postcollapse.theory.freebits import (
    FREEBITS_REGIMES,
    FlatFreeBitsLoss,
    FreeBitsOptimum,
    freebits_kl,
    freebits_loss,
    freebits_optimum,
    freebits_reduced_loss,
)
from postcollapse.theory.hierarchical import (
    HIERARCHICAL_REGIMES,
    FlatHierarchicalLoss,
    HierarchicalOptimum,
    HierarchicalParams,
    hierarchical_loss,
    hierarchical_loss_and_grad,
    hierarchical_optimum,
)
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
    "HierarchicalOptimum",
    "HierarchicalParams",
    "hierarchical_optimum",
    "hierarchical_loss",
    "hierarchical_loss_and_grad",
    "FlatHierarchicalLoss",
    "HIERARCHICAL_REGIMES",
    "FreeBitsOptimum",
    "freebits_optimum",
    "freebits_loss",
    "freebits_reduced_loss",
    "freebits_kl",
    "FlatFreeBitsLoss",
    "FREEBITS_REGIMES",
    "count_thresholds",
    "hierarchical_thresholds",
    "freebits_thresholds",
]
