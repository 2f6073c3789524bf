"""What ``locate`` brackets for each model family, and where the theory puts it.

For every family the located quantity is the beta at which a count of the trained model
goes from i to i - 1 (mode i), read from one key of the trainer's rows:

===================  ==================  ===========================================
family               row key observed    predicted critical beta (theory)
===================  ==================  ===========================================
one level            ``active_units``    ``thresholds`` (fixed or learned eta_dec)
two levels           ``active_level1``   ``hierarchical_thresholds`` (beta2 fixed)
free bits            ``active_modes``    ``freebits_thresholds`` (signal count)
===================  ==================  ===========================================

Under free bits every latent keeps KL >= lambda, and a latent pinned at lambda still has a
posterior mean that varies with x (it re-encodes a strong mode), so ``active_units``
(coordinate variances) counts every latent; the rank of Cov_x(mu) (``active_modes``: its
eigenvalues above the active threshold) is the number of data modes receiving signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Prediction", "predict", "PREDICT_RTOL"]

#: Relative precision of the predictions found by bisection (free bits): a hundred times
#: finer than the finest bracket locate is asked for in practice.
PREDICT_RTOL = 1e-6


@dataclass(frozen=True)
class Prediction:
    """Predicted critical betas (entry i - 1 for mode i: 0 without signal, inf when the
    count never drops below i), the row key observed, and the family's name."""

    values: np.ndarray
    observe: str
    family: str


def predict(moments, config) -> Prediction:
    """The prediction for a validated ``SweepConfig`` (its betas are ignored)."""
    from postcollapse.theory import spectrum, thresholds

    latent_dim = config.latent_dim
    if config.levels == 2:
        from postcollapse.theory.critical import hierarchical_thresholds

        need_vectors = config.sigma1 is not None and config.latent_dim2 < latent_dim
        spec = spectrum(moments, vectors=need_vectors)
        vals = hierarchical_thresholds(spec, latent_dim=latent_dim,
                                       latent_dim2=config.latent_dim2, beta2=config.beta2,
                                       sigma1=config.sigma1, eta_enc=config.eta_enc,
                                       eta_dec=config.eta_dec)
        return Prediction(_pad(vals, latent_dim), "active_level1", "two levels")
    if config.free_bits is not None:
        from postcollapse.theory.critical import freebits_thresholds

        spec = spectrum(moments, vectors=False)
        vals = freebits_thresholds(spec, latent_dim=latent_dim, lam=config.free_bits,
                                   eta_enc=config.eta_enc, eta_dec=config.eta_dec,
                                   rtol=PREDICT_RTOL)
        return Prediction(_pad(vals, latent_dim), "active_modes", "free bits")
    spec = spectrum(moments, vectors=False)
    mode = "prior" if config.sigma == "prior" else "learnable"
    vals = thresholds(spec, eta_dec=config.eta_dec, sigma=mode)[:latent_dim]
    return Prediction(_pad(vals, latent_dim), "active_units", "one level")


def _pad(vals, n: int) -> np.ndarray:
    out = np.zeros(n)
    vals = np.asarray(vals, dtype=np.float64)[:n]
    out[: vals.size] = vals
    return out
