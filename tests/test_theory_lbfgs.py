"""Direct optimisation of the exact L_VAE (scipy L-BFGS, best of several random starts)
reaches the closed-form global minimum of THEORY.md, for every Sigma mode and every problem
in the registry (conditional d0 != d2, nonlinear y, rank-deficient x, eta_enc/eta_dec != 1,
latent dimension below and above d*).

The default run takes one beta per problem (between the first two thresholds, so that the
minimum is partially collapsed); the slow run sweeps a beta inside every interval of
constant active-mode count, above complete collapse, and 0.1% either side of the
first two thresholds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from postcollapse.theory import active_modes, optimum
from problems import (
    PROBLEMS,
    SIGMA_KINDS,
    betas_between_thresholds,
    lbfgs_best,
    moments_and_spectrum,
    sigma_arg,
)

SIGMAS = SIGMA_KINDS
# The brief asks for 1e-6; measured worst gap over the whole slow sweep is 1.1e-13, so
# 1e-9 still leaves four orders of margin and catches closed-form errors 1e-6 would miss.
RTOL = 1e-9


def _check(p, kind, beta):
    _, _, m, spec = moments_and_spectrum(p)
    sigma = sigma_arg(kind, p.latent_dim)
    o = optimum(spec, latent_dim=p.latent_dim, beta=beta, sigma=sigma, eta_enc=p.eta_enc,
                eta_dec=p.eta_dec)
    best, _, _ = lbfgs_best(m, latent_dim=p.latent_dim, beta=beta, sigma=sigma,
                            eta_enc=p.eta_enc, eta_dec=p.eta_dec, seed=7, n_starts=3)
    gap = (best - o.loss) / abs(o.loss)
    # The closed form is the *global* minimum: L-BFGS may not beat it (beyond rounding).
    assert gap >= -1e-10, (beta, best, o.loss)
    assert gap <= RTOL, (beta, best, o.loss)
    return gap


@pytest.mark.parametrize("kind", SIGMAS)
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_lbfgs_reaches_closed_form_partial_collapse(name, kind):
    p = PROBLEMS[name]
    spec = moments_and_spectrum(p)[3]
    t = spec.zeta**2 / p.eta_dec**2
    beta = float(np.sqrt(t[0] * t[1]))  # one mode survives (before the latent_dim cap)
    assert active_modes(spec, beta, eta_dec=p.eta_dec) == 1
    _check(p, kind, beta)


@pytest.mark.slow
@pytest.mark.parametrize("kind", SIGMAS)
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_lbfgs_reaches_closed_form_every_interval(name, kind):
    p = PROBLEMS[name]
    spec = moments_and_spectrum(p)[3]
    t = spec.zeta**2 / p.eta_dec**2
    near = [t[0] * 1.001, t[0] * 0.999, t[1] * 1.001, t[1] * 0.999]  # just off thresholds
    for beta in [*betas_between_thresholds(spec.zeta, p.eta_dec), *near]:
        _check(p, kind, beta)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d0=st.integers(1, 4),
    d2=st.integers(1, 4),
    d1=st.integers(1, 4),
    plain=st.booleans(),
    kind=st.sampled_from(SIGMAS),
    log_beta=st.floats(-2.0, 1.5),
    eta_enc=st.floats(0.4, 2.5),
    eta_dec=st.floats(0.4, 2.5),
)
def test_lbfgs_matches_closed_form_on_random_problems(
    seed, d0, d2, d1, plain, kind, log_beta, eta_enc, eta_dec
):
    from postcollapse.theory import Moments, spectrum

    rng = np.random.default_rng(seed)
    n = 50
    x = rng.normal(size=(n, d0)) * rng.uniform(0.3, 2.0, d0) + rng.normal(size=d0)
    y = None if plain else x @ rng.normal(size=(d0, d2)) + 0.3 * rng.normal(size=(n, d2))
    m = Moments.from_arrays(x, y)
    spec = spectrum(m)
    beta = 10.0**log_beta
    t = spec.zeta**2 / eta_dec**2
    # Keep clear of thresholds, where L-BFGS converges sublinearly.
    assume(np.all(np.abs(t - beta) > 0.02 * beta))
    sigma = sigma_arg(kind, d1)
    o = optimum(spec, latent_dim=d1, beta=beta, sigma=sigma, eta_enc=eta_enc, eta_dec=eta_dec)
    best, _, _ = lbfgs_best(m, latent_dim=d1, beta=beta, sigma=sigma, eta_enc=eta_enc,
                            eta_dec=eta_dec, seed=seed % 1000, n_starts=3)
    gap = (best - o.loss) / abs(o.loss)
    assert -1e-10 <= gap <= RTOL, (best, o.loss)
