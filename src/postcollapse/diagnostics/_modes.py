"""Which data modes carry signal: the posterior mean's response to each mode of the spectrum.

Under free bits every latent can report KL = lambda while a weak mode receives no signal
at all (docs/THEORY.md, "Free bits"), so per-latent KL is not a collapse diagnostic there.
:func:`mode_signal` measures what is: write the data in the whitened mode coordinates of
the spectrum, u_i = g_i^T A^{-1/2} (x - E x) (unit variance, uncorrelated; g_i the right
singular vectors G of Z), and project the posterior mean on them,

    R[i, j]    = Cov_x(u_i, mu_j)              (the encoder's response to mode i)
    signal_i   = sum_j R[i, j]^2               (variance of mu along mode i)
    snr_i      = sum_j R[i, j]^2 / sigma_j^2   (the theory's p_i, with eta_enc = 1)

For a linear encoder mu = W^T x + b_e, R = G^T A^{1/2} W exactly, so ``snr`` is the
``snr`` of ``postcollapse.theory.freebits_optimum`` at its minimiser. For a nonlinear encoder
R is the linear part of the response (the best linear predictor of mu from u). numpy only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from postcollapse._checks import check_2d, check_same_rows

__all__ = ["ModeSignal", "mode_signal"]


class ModeSignal(NamedTuple):
    """Output of :func:`mode_signal`.

    Attributes
    ----------
    signal : ndarray, shape (m,)
        Variance of the posterior mean along each of the first m modes.
    snr : ndarray, shape (m,) or None
        Signal-to-noise ratio of each mode (None without ``sigma2``).
    response : ndarray, shape (m, d1)
        Cov_x(u_i, mu_j).
    """

    signal: np.ndarray
    snr: np.ndarray | None
    response: np.ndarray


def mode_signal(mu, x, spec, *, sigma2=None, eta_enc: float = 1.0,
                n_modes: int | None = None) -> ModeSignal:
    """The posterior mean's signal along each data mode (module docstring).

    Parameters
    ----------
    mu : array-like, shape (n, d1)
        Posterior means of the rows of ``x``.
    x : array-like, shape (n, d0)
        The data the spectrum was computed from (any rows of the same distribution).
    spec : Spectrum
        ``postcollapse.theory.spectrum`` of the data (with vectors).
    sigma2 : array-like, shape (d1,), optional
        Encoder variances (data-independent, or their average over the rows); gives ``snr``.
    eta_enc : float
        Prior standard deviation (``snr`` is measured in units of the prior).
    n_modes : int, optional
        Modes to report (default all d* of the spectrum).

    Returns
    -------
    ModeSignal
    """
    mu = check_2d("mu", np.asarray(mu, dtype=np.float64))
    x = check_2d("x", np.asarray(x, dtype=np.float64))
    check_same_rows(x, mu)
    if x.shape[1] != spec.d0:
        raise ValueError(f"x must have d0={spec.d0} columns (the spectrum's), got {x.shape[1]}")
    m = spec.d_star if n_modes is None else min(int(n_modes), spec.d_star)
    u = (x - spec.mean_x) @ spec.whitened_G[:, :m]  # (n, m), centred by the data mean
    mu_c = mu - mu.mean(0)
    u_c = u - u.mean(0)
    response = u_c.T @ mu_c / x.shape[0]  # (m, d1)
    signal = np.sum(response**2, axis=1)
    snr = None
    if sigma2 is not None:
        s2 = np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (mu.shape[1],))
        if np.any(s2 <= 0) or not np.all(np.isfinite(s2)):
            raise ValueError("sigma2 must be finite and > 0 for every latent")
        snr = np.sum(response**2 / (s2 / eta_enc**2), axis=1) / eta_enc**2
    return ModeSignal(signal, snr, response)
