"""The paper's synthetic regression set-up (Section 5): x ~ N(0, A), y = M x, d0 = d2 = 5.

With ``zeta`` given, M is built from the *sample* so that the sample matrix
Z = C A^{-1/2} (THEORY.md; population 1/N central moments of the drawn x and y) has
exactly the singular values ``zeta`` (to rounding, ~1e-12 relative): the collapse
thresholds beta_i* = zeta_i^2 / eta_dec^2 of the data set are then known in advance.
"""

from __future__ import annotations

import numpy as np

from postcollapse._checks import check_int_at_least

__all__ = ["synthetic", "DEFAULT_ZETA2", "DEFAULT_N_SAMPLES", "DEFAULT_SEED"]

# Default spectrum of the ``synthetic`` data set: zeta^2 (= beta_i* at eta_dec = 1).
# The largest is 14, so complete collapse happens at beta = 14 as in the paper's Figure 1.
DEFAULT_ZETA2 = (14.0, 8.0, 4.5, 2.0, 0.8)
DEFAULT_N_SAMPLES = 2000
DEFAULT_SEED = 0


def _random_orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(n, k) matrix with orthonormal columns, Haar-distributed (QR with sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def _central_cov(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, 1/N covariance) of the rows of x, in float64."""
    mean = x.mean(axis=0)
    xc = x - mean
    return mean, xc.T @ xc / x.shape[0]


def synthetic(
    *,
    n_samples: int = DEFAULT_N_SAMPLES,
    d0: int = 5,
    d2: int = 5,
    seed: int | np.random.Generator = DEFAULT_SEED,
    zeta=None,
    noise: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the regression data set x ~ N(0, A), y = M x (+ noise).

    Parameters
    ----------
    n_samples : int, default 2000
        Number of rows; must exceed ``d0`` so that the sample covariance is invertible.
    d0, d2 : int, default 5
        Input and target dimensions.
    seed : int or np.random.Generator, default 0
        Source of all randomness (A, M, the samples, the noise).
    zeta : array_like of length k <= min(d0, d2), optional
        Prescribed singular values of the sample Z = C A^{-1/2} (any order; zeros allowed).
        Modes beyond k have zeta = 0. Default: M with standard normal entries / sqrt(d0).
    noise : float, default 0.0
        Standard deviation of Gaussian noise added to y, so that the regression residual
        r = s_yy - ||Z||_F^2 is > 0. With ``zeta`` given the noise is made exactly
        uncorrelated with x in the sample (projected off [1, x]), so zeta stays exact and
        r = noise-sample variance summed over the d2 targets.

    Returns
    -------
    x : ndarray of float64, shape (n_samples, d0)
    y : ndarray of float64, shape (n_samples, d2)
    """
    n_samples = check_int_at_least("n_samples", n_samples, 2)
    d0 = check_int_at_least("d0", d0, 1)
    d2 = check_int_at_least("d2", d2, 1)
    noise = float(noise)
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise:g}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    # Population covariance A = Q diag(a) Q^T with eigenvalues spread over [0.5, 2].
    q = _random_orthonormal(rng, d0, d0)
    a = rng.uniform(0.5, 2.0, size=d0)
    x = (rng.standard_normal((n_samples, d0)) * np.sqrt(a)) @ q.T

    if zeta is None:
        m = rng.standard_normal((d2, d0)) / np.sqrt(d0)
        y = x @ m.T
        if noise > 0:
            y = y + noise * rng.standard_normal((n_samples, d2))
        return x, y

    zeta = np.abs(np.asarray(zeta, dtype=np.float64).ravel())
    k = zeta.size
    if k == 0 or k > min(d0, d2):
        raise ValueError(
            f"zeta must have between 1 and min(d0, d2) = {min(d0, d2)} values, got {k}"
        )
    if not np.all(np.isfinite(zeta)):
        raise ValueError("zeta must be finite")
    if n_samples <= d0:
        raise ValueError(
            f"n_samples = {n_samples} must exceed d0 = {d0} to prescribe zeta "
            "(the sample covariance of x must be invertible)"
        )
    # Sample moments: A_s = Cov(x), and for y = M x, C = M A_s, so Z = M A_s^{1/2}.
    # Choose Z = F diag(zeta) G^T and solve M = Z A_s^{-1/2}.
    _, a_s = _central_cov(x)
    w, v = np.linalg.eigh(a_s)
    a_inv_sqrt = (v / np.sqrt(w)) @ v.T
    f = _random_orthonormal(rng, d2, k)
    g = _random_orthonormal(rng, d0, k)
    z = (f * zeta) @ g.T
    m = z @ a_inv_sqrt
    y = x @ m.T
    if noise > 0:
        e = noise * rng.standard_normal((n_samples, d2))
        # Project e off span[1, x] (sample least squares) so that Cov(e, x) = 0 exactly.
        basis = np.column_stack([np.ones(n_samples), x])
        coef, *_ = np.linalg.lstsq(basis, e, rcond=None)
        y = y + (e - basis @ coef)
    return x, y
