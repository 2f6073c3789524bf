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

from postcollapse.theory import active_modes, optimum
from problems import (
    PROBLEMS,
    betas_between_thresholds,
    fixed_sigma2,
    lbfgs_best,
    moments_and_spectrum,
)

SIGMAS = ("learnable", "prior", "fixed")
# The brief asks for 1e-6; measured worst gap over the whole slow sweep is 1.1e-13, so
# 1e-9 still leaves four orders of margin and catches closed-form errors 1e-6 would miss.
RTOL = 1e-9


def _sigma_arg(kind, d1):
    return fixed_sigma2(d1) if kind == "fixed" else kind


def _check(p, kind, beta):
    _, _, m, spec = moments_and_spectrum(p)
    sigma = _sigma_arg(kind, p.latent_dim)
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
