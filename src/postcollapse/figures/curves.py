"""Theoretical curves drawn over the trained points: min L_VAE(beta) and sigma_i*(beta).

Only numpy and ``postcollapse.theory``; no matplotlib, so the report code can use the same
numbers that the figures draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postcollapse._checks import check_int_at_least, check_positive

__all__ = ["TheoryCurves", "theory_curves", "theory_sigma"]


@dataclass(frozen=True)
class TheoryCurves:
    """Closed-form curves of the linear model on a dense beta grid.

    Attributes
    ----------
    betas : ndarray (n,)
        Increasing grid of beta values.
    loss : ndarray (n,)
        min L_VAE at each beta with learnable Sigma (Theorem 2), without the log 2 pi constant.
    sigma : ndarray (n, latent_dim)
        sigma_i* (Prop. 3), column i for mode i (zeta descending).
    thresholds : ndarray (latent_dim,)
        beta_i* = zeta_i^2 / eta_dec^2, descending (0 for modes beyond the rank).
    zeta : ndarray (latent_dim,)
        The top ``latent_dim`` singular values of Z, zero-padded.
    """

    betas: np.ndarray
    loss: np.ndarray
    sigma: np.ndarray
    thresholds: np.ndarray
    zeta: np.ndarray


def theory_sigma(zeta, betas, *, eta_enc: float = 1.0, eta_dec: float = 1.0) -> np.ndarray:
    """Mean encoder standard deviation at the global minimum (Prop. 3, THEORY.md).

    sigma_i* = sqrt(beta) eta_dec eta_enc / zeta_i  while beta eta_dec^2 < zeta_i^2,
    else eta_enc (the mode has collapsed onto the prior).

    Parameters
    ----------
    zeta : array_like (d1,)
        Singular values of Z for the latent dimensions (zeros allowed: always collapsed).
    betas : array_like (n,)

    Returns
    -------
    ndarray (n, d1)
    """
    from postcollapse.theory import optimal_sigma2

    zeta = np.asarray(zeta, dtype=float).reshape(-1)
    s2 = optimal_sigma2(zeta, betas, latent_dim=max(zeta.size, 1), sigma="learnable",
                        eta_enc=eta_enc, eta_dec=eta_dec)
    return np.sqrt(s2)[:, : zeta.size]


def theory_curves(
    spec,
    *,
    latent_dim: int,
    betas=None,
    beta_range: tuple[float, float] | None = None,
    n: int = 400,
    eta_enc: float = 1.0,
    eta_dec: float = 1.0,
) -> TheoryCurves:
    """Dense theoretical curves for the loss / sigma figures.

    Parameters
    ----------
    spec : postcollapse.theory.Spectrum
        Spectrum of the training data (its residual enters the loss).
    latent_dim : int
        d1, the number of latent dimensions of the trained models.
    betas : array_like, optional
        Grid to evaluate on; by default ``n`` log-spaced points over ``beta_range``.
    beta_range : (lo, hi), optional
        Default: 0.05 * beta_{d1}* to 3 * beta_1*.
    n : int
        Number of points of the default grid.
    """
    from postcollapse.theory import min_loss

    latent_dim = check_int_at_least("latent_dim", latent_dim, 1)
    eta_enc = check_positive("eta_enc", eta_enc)
    eta_dec = check_positive("eta_dec", eta_dec)
    zeta = np.asarray(spec.zeta_padded(latent_dim), dtype=float)
    thresholds = zeta**2 / eta_dec**2
    if betas is None:
        if beta_range is None:
            pos = thresholds[thresholds > 0]
            if pos.size == 0:
                raise ValueError("spec has no nonzero zeta: give beta_range=(lo, hi) explicitly")
            beta_range = (0.05 * pos.min(), 3.0 * pos.max())
        lo = check_positive("beta_range[0]", beta_range[0])
        hi = check_positive("beta_range[1]", beta_range[1])
        if hi <= lo:
            raise ValueError(f"beta_range must be increasing, got ({lo:g}, {hi:g})")
        betas = np.geomspace(lo, hi, check_int_at_least("n", n, 2))
    betas = np.sort(np.asarray(betas, dtype=float).reshape(-1))
    loss = np.asarray(
        min_loss(
            spec,
            betas,
            latent_dim=latent_dim,
            sigma="learnable",
            eta_enc=eta_enc,
            eta_dec=eta_dec,
        ),
        dtype=float,
    ).reshape(-1)
    sigma = theory_sigma(zeta, betas, eta_enc=eta_enc, eta_dec=eta_dec)
    return TheoryCurves(betas=betas, loss=loss, sigma=sigma, thresholds=thresholds, zeta=zeta)
