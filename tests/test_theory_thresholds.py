"""Thresholds, active modes, beta intervals, and the vectorised min_loss curve."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from postcollapse.theory import (
    active_modes,
    beta_interval,
    min_loss,
    optimum,
    spectrum,
    thresholds,
)
from problems import PROBLEMS, fixed_sigma2, moments_and_spectrum

zetas = st.lists(st.floats(0.0, 10.0), min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(zeta=zetas, data=st.data(), eta_dec=st.floats(0.2, 3.0))
def test_beta_in_interval_k_means_k_active(zeta, data, eta_dec):
    k = data.draw(st.integers(0, len(zeta)))
    lo, hi = beta_interval(zeta, k, eta_dec=eta_dec)
    assert lo <= hi
    t = thresholds(zeta, eta_dec=eta_dec)
    assert np.all(np.diff(t) <= 0)
    assume(lo < hi)  # coinciding thresholds leave some k with no beta at all
    u = data.draw(st.floats(0.0, 1.0, exclude_max=True))
    beta = lo * (1 + u) + u if np.isinf(hi) else lo + u * (hi - lo)
    assume(beta > 0 and beta < hi)
    assert active_modes(zeta, beta, eta_dec=eta_dec) == k


@settings(max_examples=100, deadline=None)
@given(zeta=zetas, beta=st.floats(1e-4, 200.0), eta_dec=st.floats(0.2, 3.0))
def test_active_modes_lies_in_its_interval(zeta, beta, eta_dec):
    k = active_modes(zeta, beta, eta_dec=eta_dec)
    lo, hi = beta_interval(zeta, k, eta_dec=eta_dec)
    assert lo <= beta < hi
    # beta and eta_dec enter only through beta * eta_dec^2 (away from rounding ties).
    t = np.asarray(zeta) ** 2
    if np.all(np.abs(t - beta * eta_dec**2) > 1e-12 * (t + beta * eta_dec**2)):
        assert active_modes(zeta, beta * eta_dec**2) == k
    # Latent capacity caps the count.
    assert active_modes(zeta, beta, eta_dec=eta_dec, latent_dim=1) == min(k, 1)


def _sigmas(d1):
    return ["learnable", "prior", fixed_sigma2(d1)]


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_min_loss_curve_equals_pointwise_optimum(name):
    p = PROBLEMS[name]
    spec = moments_and_spectrum(p)[3]
    t = thresholds(spec, eta_dec=p.eta_dec)
    betas = np.concatenate([np.geomspace(t[-1] / 10 + 1e-3, t[0] * 10, 25), t[t > 0]])
    for sigma in _sigmas(p.latent_dim):
        curve = min_loss(spec, betas, latent_dim=p.latent_dim, sigma=sigma,
                         eta_enc=p.eta_enc, eta_dec=p.eta_dec)
        assert curve.shape == betas.shape
        point = [optimum(spec, latent_dim=p.latent_dim, beta=b, sigma=sigma,
                         eta_enc=p.eta_enc, eta_dec=p.eta_dec).loss for b in betas]
        np.testing.assert_allclose(curve, point, rtol=1e-12)
    # 2-D input keeps its shape.
    grid = betas[:6].reshape(2, 3)
    assert min_loss(spec, grid, latent_dim=p.latent_dim).shape == (2, 3)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_min_loss_continuous_at_thresholds_and_learnable_below_prior(name):
    p = PROBLEMS[name]
    spec = moments_and_spectrum(p)[3]
    kw = {"latent_dim": p.latent_dim, "eta_enc": p.eta_enc, "eta_dec": p.eta_dec}
    t = thresholds(spec, eta_dec=p.eta_dec)
    t = t[t > 0]
    eps = 1e-9
    for sigma in ("learnable", "prior"):
        below = min_loss(spec, t * (1 - eps), sigma=sigma, **kw)
        at = min_loss(spec, t, sigma=sigma, **kw)
        above = min_loss(spec, t * (1 + eps), sigma=sigma, **kw)
        scale = np.abs(at).max()
        np.testing.assert_allclose(below, at, atol=1e-7 * scale)
        np.testing.assert_allclose(above, at, atol=1e-7 * scale)
        # Complete collapse: the loss is the constant (r + sum zeta^2) / (2 eta_dec^2).
        flat = min_loss(spec, np.array([1.0, 2.0, 10.0]) * t[0], sigma=sigma, **kw)
        const = (spec.residual + np.sum(spec.zeta**2)) / (2 * p.eta_dec**2)
        np.testing.assert_allclose(flat, const, rtol=1e-12)
    betas = np.geomspace(t[-1] / 20, t[0] * 5, 60)
    learn = min_loss(spec, betas, sigma="learnable", **kw)
    prior = min_loss(spec, betas, sigma="prior", **kw)
    assert np.all(learn <= prior + 1e-12 * np.abs(prior))
    # min L is nondecreasing in beta (the KL term only grows with beta).
    assert np.all(np.diff(learn) >= -1e-12 * np.abs(learn[1:]))
    assert np.all(np.diff(prior) >= -1e-12 * np.abs(prior[1:]))


@settings(max_examples=50, deadline=None)
@given(zeta=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=5),
       beta=st.floats(1e-3, 50.0), eta_enc=st.floats(0.3, 3.0), eta_dec=st.floats(0.3, 3.0),
       d1=st.integers(1, 6))
def test_optimum_invariants_on_random_spectra(zeta, beta, eta_enc, eta_dec, d1):
    """A spectrum with exactly these zeta (plain VAE, Cov x = diag(zeta^2)): the optimum's
    active set matches active_modes, and sigma*^2 <= eta_enc^2."""
    from postcollapse.theory import Moments, spectrum

    z = np.sort(np.asarray(zeta))[::-1]
    assume(z[0] > 1e-3)
    z = z[z > 1e-3 * z[0]]
    d = z.size
    # Moments with exact covariance diag(z^2): two symmetric rows per coordinate.
    n = 2 * d
    x = np.zeros((n, d))
    for i in range(d):
        x[2 * i, i] = z[i] * np.sqrt(d)
        x[2 * i + 1, i] = -z[i] * np.sqrt(d)
    spec = spectrum(Moments.from_arrays(x))
    np.testing.assert_allclose(spec.zeta, z, rtol=1e-12)
    o = optimum(spec, latent_dim=d1, beta=beta, sigma="learnable", eta_enc=eta_enc,
                eta_dec=eta_dec)
    margin = np.min(np.abs(z**2 - beta * eta_dec**2)) / max(z[0] ** 2, beta * eta_dec**2)
    assume(margin > 1e-9)
    assert o.n_active == active_modes(spec, beta, eta_dec=eta_dec, latent_dim=d1)
    assert np.all(o.sigma2 <= eta_enc**2 * (1 + 1e-12))
    np.testing.assert_allclose(o.sigma2[~o.active], eta_enc**2, rtol=1e-12)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_spectrum_without_vectors_has_the_same_values(name):
    """vectors=False (the thresholds command's path) gives the same zeta, rank and residual,
    and refuses to build an optimum instead of returning a wrong one."""
    _, _, m, full = moments_and_spectrum(PROBLEMS[name])
    light = spectrum(m, vectors=False)
    np.testing.assert_allclose(light.zeta, full.zeta, rtol=1e-10, atol=1e-12)
    assert light.rank == full.rank
    assert light.residual == pytest.approx(full.residual, rel=1e-8, abs=1e-10)
    assert light.F is None and light.G is None and not light.has_vectors
    with pytest.raises(ValueError, match="vectors=False"):
        optimum(light, latent_dim=2, beta=1e-3)
