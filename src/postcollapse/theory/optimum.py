"""Closed-form global minimum of the linear (conditional) VAE for three Sigma modes.

THEORY.md, "Global minimum": Sigma learnable (Theorem 2, Prop. 3), fixed at the prior
(Theorem 1), or any fixed diagonal (Prop. 2 with the corrected, sorted pairing).
Write b = beta * eta_dec^2; beta and eta_dec enter only through b (except in the KL of a
fixed Sigma, which carries beta alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postcollapse._checks import check_int_at_least, check_positive
from postcollapse.theory.spectrum import Spectrum

__all__ = ["Optimum", "optimum", "min_loss", "SIGMA_MODES"]

SIGMA_MODES = ("learnable", "prior")


@dataclass(frozen=True, eq=False)
class Optimum:
    """A global minimiser of L_VAE and its value.

    Attributes
    ----------
    U : ndarray of shape (d2, d1)
    W : ndarray of shape (d0, d1)
    sigma2 : ndarray of shape (d1,)
        Encoder variances sigma_i^2.
    b_e : ndarray of shape (d1,)
    b_d : ndarray of shape (d2,)
    lam, theta : ndarray of shape (d1,)
        Singular values of U and of V = A^{1/2} W per latent dimension.
    mode : ndarray of int of shape (d1,)
        The mode (0-based index into zeta) that each latent dimension serves.
    loss : float
        min L_VAE (no log 2 pi constant).
    active : ndarray of bool of shape (d1,)
        Latent dimensions that carry information (lambda_i > 0).
    """

    U: np.ndarray
    W: np.ndarray
    sigma2: np.ndarray
    b_e: np.ndarray
    b_d: np.ndarray
    lam: np.ndarray
    theta: np.ndarray
    mode: np.ndarray
    loss: float
    active: np.ndarray
    beta: float
    eta_enc: float
    eta_dec: float
    sigma: str

    @property
    def n_active(self) -> int:
        return int(self.active.sum())


def _check_common(spec, latent_dim, eta_enc, eta_dec):
    if not isinstance(spec, Spectrum):
        raise TypeError(
            f"expected a Spectrum (postcollapse.theory.spectrum), got {type(spec).__name__}"
        )
    d1 = check_int_at_least("latent_dim", latent_dim, 1)
    return d1, check_positive("eta_enc", eta_enc), check_positive("eta_dec", eta_dec)


def _fixed_sigma2(sigma, d1: int) -> np.ndarray:
    s2 = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if s2.shape != (d1,):
        raise ValueError(
            f"sigma as fixed variances must have length latent_dim={d1}, got {s2.size}"
        )
    if not np.all(np.isfinite(s2)) or np.any(s2 <= 0):
        raise ValueError("fixed encoder variances sigma_i^2 must be finite and > 0")
    return s2


def _kl_var(s2: np.ndarray, eta_enc: float) -> np.ndarray:
    """Per-dimension sigma^2/eta^2 - 1 - log(sigma^2/eta^2) (>= 0)."""
    r = s2 / eta_enc**2
    return r - 1.0 - np.log(r)


def optimum(
    spec: Spectrum,
    *,
    latent_dim: int,
    beta: float,
    sigma="learnable",
    eta_enc: float = 1.0,
    eta_dec: float = 1.0,
) -> Optimum:
    """Closed-form global minimum of L_VAE.

    Parameters
    ----------
    spec : Spectrum
        From :func:`postcollapse.theory.spectrum`.
    latent_dim : int
        d1, the number of latent dimensions.
    beta : float
        KL weight, > 0.
    sigma : {"learnable", "prior"} or array-like of shape (latent_dim,)
        Encoder variance: learnable diagonal, fixed at eta_enc^2 I, or these fixed
        variances sigma_i^2.
    eta_enc, eta_dec : float
        Prior and decoder standard deviations.

    Returns
    -------
    Optimum
        U* = F Lambda P, W* = A^{-1/2} G Theta P. For a fixed unequal Sigma the dimension
        with the smallest sigma serves the strongest mode (THEORY.md, Prop. 2 corrected).
    """
    d1, eta_enc, eta_dec = _check_common(spec, latent_dim, eta_enc, eta_dec)
    beta = check_positive("beta", beta)
    b = beta * eta_dec**2
    zeta_all = spec.zeta
    const = spec.residual + float(np.sum(zeta_all**2))
    zeta = spec.zeta_padded(d1)  # mode j of latent dimension j, before any pairing
    mode = np.arange(d1)

    if isinstance(sigma, str):
        if sigma not in SIGMA_MODES:
            raise ValueError(
                f"sigma must be one of {SIGMA_MODES} or an array of variances, got {sigma!r}"
            )
        label = sigma
        if sigma == "learnable":
            z2 = zeta**2
            active = z2 > b
            gap = np.where(active, z2 - b, 0.0)
            sigma2 = np.where(active, b * eta_enc**2 / np.where(active, z2, 1.0), eta_enc**2)
            lam = np.sqrt(gap) / eta_enc
            theta = np.where(active, eta_enc * np.sqrt(gap) / np.where(active, zeta, 1.0), 0.0)
            gain = np.where(active, z2 - b * (1.0 - np.log(b / np.where(active, z2, 1.0))), 0.0)
            loss = (const - float(gain.sum())) / (2 * eta_dec**2)
        else:
            sigma2 = np.full(d1, eta_enc**2)
            s = np.sqrt(b)
            gap = np.maximum(zeta - s, 0.0)
            active = gap > 0
            lam = np.sqrt(s / eta_enc**2 * gap)
            theta = np.sqrt(eta_enc**2 / s * gap)
            loss = (const - float(np.sum(gap**2))) / (2 * eta_dec**2)
    else:
        label = "fixed"
        sigma2 = _fixed_sigma2(sigma, d1)
        # Smallest sigma serves the strongest mode; stable for ties.
        order = np.argsort(sigma2, kind="stable")
        mode = np.empty(d1, dtype=int)
        mode[order] = np.arange(d1)
        zeta = spec.zeta_padded(d1)[mode]
        sig = np.sqrt(sigma2)
        s = np.sqrt(beta) * sig * eta_dec / eta_enc
        gap = np.maximum(zeta - s, 0.0)
        active = gap > 0
        lam = np.sqrt(np.sqrt(beta) * eta_dec / (sig * eta_enc) * gap)
        theta = np.sqrt(sig * eta_enc / (np.sqrt(beta) * eta_dec) * gap)
        loss = (const - float(np.sum(gap**2))) / (2 * eta_dec**2) + beta / 2 * float(
            np.sum(_kl_var(sigma2, eta_enc))
        )

    # Columns of F and A^{-1/2} G for each latent dimension's mode (zero past d_star).
    f_cols = np.zeros((spec.d2, d1))
    g_cols = np.zeros((spec.d0, d1))
    valid = mode < spec.d_star
    if valid.any():
        spec._need_vectors()
        f_cols[:, valid] = spec.F[:, mode[valid]]
        g_cols[:, valid] = spec.whitened_G[:, mode[valid]]
    U = f_cols * lam
    W = g_cols * theta
    return Optimum(
        U=U,
        W=W,
        sigma2=sigma2,
        b_e=-(W.T @ spec.mean_x),
        b_d=spec.mean_y.copy(),
        lam=lam,
        theta=theta,
        mode=mode,
        loss=float(loss),
        active=active,
        beta=beta,
        eta_enc=eta_enc,
        eta_dec=eta_dec,
        sigma=label,
    )


def min_loss(
    spec: Spectrum,
    betas,
    *,
    latent_dim: int,
    sigma="learnable",
    eta_enc: float = 1.0,
    eta_dec: float = 1.0,
) -> np.ndarray:
    """Closed-form min L_VAE for each beta in ``betas`` (vectorised; shape of ``betas``)."""
    d1, eta_enc, eta_dec = _check_common(spec, latent_dim, eta_enc, eta_dec)
    beta = np.asarray(betas, dtype=np.float64)
    if not np.all(np.isfinite(beta)) or np.any(beta <= 0):
        raise ValueError("every beta must be a finite number > 0")
    const = spec.residual + float(np.sum(spec.zeta**2))
    b = beta[..., None] * eta_dec**2
    z = spec.zeta_padded(d1)
    if isinstance(sigma, str) and sigma == "learnable":
        z2 = z**2
        act = z2 > b
        ratio = np.where(act, b / np.where(z2 > 0, z2, 1.0), 1.0)
        gain = np.where(act, z2 - b * (1.0 - np.log(ratio)), 0.0)
        return (const - gain.sum(-1)) / (2 * eta_dec**2)
    if isinstance(sigma, str) and sigma == "prior":
        gap = np.maximum(z - np.sqrt(b), 0.0)
        return (const - (gap**2).sum(-1)) / (2 * eta_dec**2)
    if isinstance(sigma, str):
        raise ValueError(
            f"sigma must be one of {SIGMA_MODES} or an array of variances, got {sigma!r}"
        )
    s2 = _fixed_sigma2(sigma, d1)
    zs = np.sort(z)[::-1]
    s = np.sqrt(beta[..., None]) * np.sort(np.sqrt(s2)) * eta_dec / eta_enc
    gap = np.maximum(zs - s, 0.0)
    return (const - (gap**2).sum(-1)) / (2 * eta_dec**2) + beta / 2 * float(
        np.sum(_kl_var(s2, eta_enc))
    )
