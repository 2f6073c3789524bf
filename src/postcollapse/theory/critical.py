"""Critical betas of the extensions: where a count of the global minimum drops from i to i-1.

docs/THEORY.md, "Critical betas of the extensions". For the one-level VAE the critical
betas are :func:`postcollapse.theory.thresholds`. For the two extensions:

- two-level VAE (``hierarchical_thresholds``): the beta at which the number of active
  level-1 latents (``HierarchicalOptimum.n_active_level1``) goes from i to i-1, at a fixed
  beta2. With S1 = sigma1^2 I fixed and level 2 able to serve every level-1 direction
  (latent_dim2 >= latent_dim): beta_i* = zeta_i^2 / sigma1^2 when zeta_i^2 <= beta2 eta_dec^2,
  and infinite otherwise (level 1 keeps mode i at every beta). With both variances learnable:
  beta_i* = zeta_i^2 / eta_dec^2, reachable only when it is below beta2 (above, the loss is
  unbounded below), infinite otherwise. latent_dim2 < latent_dim: by bisection on
  ``hierarchical_optimum``.
- free bits (``freebits_thresholds``): the beta at which the number of modes receiving
  signal (``FreeBitsOptimum.signal_modes``, snr_i > 1e-8) goes from i to i-1. No closed
  form: bisection on ``freebits_optimum``. The count at large beta is that of the
  all-pinned reverse water-filling (independent of beta), so the modes it feeds never lose
  their signal (infinite threshold).

:func:`count_thresholds` is the bisection both use. numpy/scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from postcollapse._checks import check_int_at_least, check_positive
from postcollapse.theory.spectrum import Spectrum

__all__ = ["count_thresholds", "hierarchical_thresholds", "freebits_thresholds"]


def count_thresholds(count: Callable[[float], int], counts, *, lo: float, hi: float,
                     rtol: float = 1e-7) -> np.ndarray:
    """sup{beta : count(beta) >= i} for each i in ``counts``, by bisection in log beta.

    Parameters
    ----------
    count : callable(beta) -> int
        A count that does not increase with beta (where it does, the bisection finds one
        of the betas at which it crosses i).
    counts : sequence of int
        The levels i (>= 1).
    lo, hi : float
        0 < lo < hi; ``count(lo)`` must be >= every i asked for (else ValueError).
        Levels with ``count(hi) >= i`` get inf.
    rtol : float
        Relative width of the final bracket; the midpoint (in log beta) is returned.

    Returns
    -------
    ndarray of shape (len(counts),)
    """
    lo, hi, rtol = (check_positive(n, v) for n, v in (("lo", lo), ("hi", hi), ("rtol", rtol)))
    if lo >= hi:
        raise ValueError(f"lo must be below hi, got lo={lo:g}, hi={hi:g}")
    cache: dict[float, int] = {}

    def n(b):
        if b not in cache:
            cache[b] = int(count(b))
        return cache[b]

    out = np.empty(len(counts))
    n_lo, n_hi = n(lo), n(hi)
    for k, i in enumerate(counts):
        i = check_int_at_least("count", i, 1)
        if n_lo < i:
            raise ValueError(f"count({lo:g}) = {n_lo} is below {i}: give a smaller lo")
        if n_hi >= i:
            out[k] = math.inf
            continue
        a = max([b for b, c in cache.items() if c >= i and b < hi], default=lo)
        z = min([b for b, c in cache.items() if c < i and b > a], default=hi)
        while z / a - 1 > rtol:
            mid = math.sqrt(a * z)
            if n(mid) >= i:
                a = mid
            else:
                z = mid
        out[k] = math.sqrt(a * z)
    return out


def _check_spec(spec) -> Spectrum:
    if not isinstance(spec, Spectrum):
        raise TypeError(
            f"expected a Spectrum (postcollapse.theory.spectrum), got {type(spec).__name__}"
        )
    return spec


def hierarchical_thresholds(spec: Spectrum, *, latent_dim: int, latent_dim2: int, beta2: float,
                            sigma1: float | None = None, eta_enc: float = 1.0,
                            eta_dec: float = 1.0, rtol: float = 1e-9) -> np.ndarray:
    """Level-1 critical betas of the two-level linear VAE at a fixed beta2 (module docstring).

    Parameters
    ----------
    spec : Spectrum
        With vectors when ``latent_dim2 < latent_dim`` (the bisection builds optima).
    latent_dim, latent_dim2 : int >= 1
    beta2 : float > 0
    sigma1 : float > 0 or None
        Fixed level-1 encoder standard deviation; None: both variances learnable.
    eta_enc, eta_dec : float > 0
    rtol : float
        Bisection tolerance (latent_dim2 < latent_dim only).

    Returns
    -------
    ndarray of shape (min(latent_dim, d*),)
        Entry i - 1: the beta above which fewer than i level-1 latents are active
        (non-increasing; inf where the count never drops below i at a bounded loss).
    """
    from postcollapse.theory.hierarchical import hierarchical_optimum

    spec = _check_spec(spec)
    d1 = check_int_at_least("latent_dim", latent_dim, 1)
    d2 = check_int_at_least("latent_dim2", latent_dim2, 1)
    beta2 = check_positive("beta2", beta2)
    eta_dec = check_positive("eta_dec", eta_dec)
    eta_enc = check_positive("eta_enc", eta_enc)
    z2 = spec.zeta[:d1] ** 2
    z2 = z2[z2 > 0]
    e2 = eta_dec**2
    if sigma1 is None:
        th = z2 / e2
        return np.where(th < beta2, th, math.inf)
    sigma1 = check_positive("sigma1", sigma1)
    if d2 >= d1:
        return np.where(z2 <= beta2 * e2, z2 / sigma1**2, math.inf)

    def count(b):
        return hierarchical_optimum(spec, latent_dim=d1, latent_dim2=d2, beta=b, beta2=beta2,
                                    sigma1=sigma1, eta_enc=eta_enc,
                                    eta_dec=eta_dec).n_active_level1

    if z2.size == 0:
        return np.zeros(0)
    lo = 0.5 * float(z2[-1]) / sigma1**2
    hi = 4.0 * max(float(z2[0]) / sigma1**2, beta2 * e2 / sigma1**2)
    return count_thresholds(count, range(1, z2.size + 1), lo=lo, hi=hi, rtol=rtol)


def freebits_thresholds(spec: Spectrum, *, latent_dim: int, lam: float, eta_enc: float = 1.0,
                        eta_dec: float = 1.0, rtol: float = 1e-7, n_starts: int = 8,
                        seed: int = 0) -> np.ndarray:
    """Critical betas of the signal count under free bits (module docstring).

    Bisection in log beta on ``freebits_optimum(...).signal_modes.sum()`` between a beta
    small enough for every latent to be above lam (the plain beta-VAE optimum, every mode
    fed) and a beta in the all-pinned regime (the count no longer changes).

    Parameters
    ----------
    spec : Spectrum
    latent_dim : int >= 1
    lam : float >= 0
        Free bits per latent dimension (nats).
    eta_enc, eta_dec : float > 0
    rtol : float
        Relative width of the final brackets.
    n_starts, seed :
        Passed to ``freebits_optimum``.

    Returns
    -------
    ndarray of shape (min(latent_dim, d*),)
        Entry i - 1: the beta above which fewer than i modes receive signal
        (non-increasing; inf for the modes the all-pinned water-filling feeds, which keep
        their signal at every beta). Depends on beta and eta_dec through beta eta_dec^2.
    """
    from postcollapse.theory.freebits import (
        check_free_bits,
        freebits_optimum,
        freebits_waterfilling,
    )

    spec = _check_spec(spec)
    d1 = check_int_at_least("latent_dim", latent_dim, 1)
    lam = check_free_bits(lam)
    eta_dec = check_positive("eta_dec", eta_dec)
    eta_enc = check_positive("eta_enc", eta_enc)
    zeta = spec.zeta[spec.zeta > 0]
    k = min(d1, zeta.size)
    if k == 0:
        return np.zeros(0)
    e2 = eta_dec**2
    if lam == 0:  # the beta-VAE: snr_i = zeta_i^2 / (beta eta_dec^2) - 1 reaches 0 at beta_i*
        return zeta[:k] ** 2 / e2

    def opt(b):
        return freebits_optimum(spec, latent_dim=d1, beta=b, lam=lam, eta_enc=eta_enc,
                                eta_dec=eta_dec, n_starts=n_starts, seed=seed)

    def count(b):
        return int(opt(b).signal_modes[:k].sum())

    # Below zeta_k^2 e^{-2 lam} / eta_dec^2 every latent's rate exceeds lam: free bits are
    # inactive and the optimum is the beta-VAE's, which feeds all k modes.
    lo = 0.5 * float(zeta[k - 1]) ** 2 * math.exp(-2.0 * lam) / e2
    _, p = freebits_waterfilling(zeta, latent_dim=d1, residual=spec.residual, beta=1.0,
                                 lam=lam, eta_dec=eta_dec)
    m_inf = int(np.sum(p[:k] > 1e-8))
    hi = 2.0 * float(zeta[0]) ** 2 / e2
    for _ in range(80):  # up to the all-pinned regime, where the count is m_inf for good
        o = opt(hi)
        if o.regime == "all pinned" and int(o.signal_modes[:k].sum()) == m_inf:
            break
        hi *= 2.0
    else:  # pragma: no cover - the all-pinned regime is reached at a finite beta
        raise ValueError(f"free bits: no all-pinned regime found up to beta = {hi:g}")
    out = np.full(k, math.inf)
    if m_inf < k:
        out[m_inf:] = count_thresholds(count, range(m_inf + 1, k + 1), lo=lo, hi=hi, rtol=rtol)
    return out
