"""Critical betas of the extensions (theory.critical) against the exact optima they count."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postcollapse.data import load
from postcollapse.theory import (
    Moments,
    freebits_optimum,
    hierarchical_optimum,
    spectrum,
    thresholds,
)
from postcollapse.theory.critical import (
    count_thresholds,
    freebits_thresholds,
    hierarchical_thresholds,
)
from postcollapse.theory.freebits import freebits_waterfilling


def _spec(seed, d0=6, n=300):
    rng = np.random.default_rng(seed)
    scales = np.sort(rng.uniform(0.2, 3.0, d0))[::-1]
    x = rng.normal(size=(n, d0)) * scales + 4.0
    return spectrum(Moments.from_arrays(x))


def _n1(spec, beta, **kw):
    return hierarchical_optimum(spec, beta=beta, **kw).n_active_level1


def test_count_thresholds_of_a_step_count():
    true = [5.0, 2.0, 0.5]
    got = count_thresholds(lambda b: sum(t > b for t in true), [1, 2, 3], lo=0.1, hi=4.0,
                           rtol=1e-10)
    assert got[0] == math.inf  # the count is still >= 1 at hi
    np.testing.assert_allclose(got[1:], true[1:], rtol=1e-9)
    with pytest.raises(ValueError, match="give a smaller lo"):
        count_thresholds(lambda b: 0, [1], lo=0.1, hi=1.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), beta2=st.floats(0.2, 10.0), sigma1=st.floats(0.3, 2.0),
       eta_dec=st.floats(0.5, 2.0), d2=st.integers(1, 6))
def test_hierarchical_thresholds_flip_the_closed_form_count(seed, beta2, sigma1, eta_dec, d2):
    spec = _spec(seed)
    kw = {"latent_dim": 4, "latent_dim2": d2, "beta2": beta2, "sigma1": sigma1,
          "eta_dec": eta_dec}
    th = hierarchical_thresholds(spec, **kw)
    assert th.shape == (4,) and np.all(np.diff(th[np.isfinite(th)]) <= 0)
    z2 = spec.zeta[:4] ** 2
    if d2 >= 4:  # the explicit formula
        expect = np.where(z2 <= beta2 * eta_dec**2, z2 / sigma1**2, np.inf)
        np.testing.assert_array_equal(th, expect)
    for i, t in enumerate(th, start=1):
        if math.isinf(t):
            assert _n1(spec, 1e4 * float(z2[0]) / sigma1**2, **kw) >= i
        else:
            assert _n1(spec, t * (1 - 1e-6), **kw) >= i
            assert _n1(spec, t * (1 + 1e-6), **kw) < i


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), beta2=st.floats(0.2, 10.0), eta_dec=st.floats(0.5, 2.0))
def test_hierarchical_thresholds_both_learnable(seed, beta2, eta_dec):
    spec = _spec(seed)
    kw = {"latent_dim": 4, "latent_dim2": 2, "beta2": beta2, "eta_dec": eta_dec}
    th = hierarchical_thresholds(spec, **kw)
    for i, t in enumerate(th, start=1):
        if math.isinf(t):  # collapses only beyond beta2, where the loss is unbounded
            assert spec.zeta[i - 1] ** 2 / eta_dec**2 >= beta2
            assert _n1(spec, beta2, **kw) >= i
        else:
            assert t == pytest.approx(spec.zeta[i - 1] ** 2 / eta_dec**2, rel=1e-15)
            assert _n1(spec, t * (1 - 1e-9), **kw) >= i
            assert _n1(spec, min(beta2, t * (1 + 1e-9)), **kw) < i


@pytest.fixture(scope="module")
def synthetic():
    return spectrum(load("synthetic").moments())


@pytest.fixture(scope="module")
def fb_thresholds(synthetic):
    return freebits_thresholds(synthetic, latent_dim=5, lam=0.1, rtol=1e-6)


def _signal(spec, beta, lam=0.1, eta_dec=1.0):
    return int(freebits_optimum(spec, latent_dim=5, beta=beta, lam=lam,
                                eta_dec=eta_dec).signal_modes.sum())


@pytest.mark.slow
def test_freebits_thresholds_flip_the_signal_count(synthetic, fb_thresholds):
    th = fb_thresholds
    assert th.shape == (5,) and np.all(np.diff(th[np.isfinite(th)]) <= 0)
    # The modes with an infinite threshold are those the all-pinned water-filling feeds.
    _, p = freebits_waterfilling(synthetic.zeta, latent_dim=5, beta=1.0, lam=0.1)
    assert int(np.isinf(th).sum()) == int(np.sum(p > 1e-8)) == 3
    for i, t in enumerate(th, start=1):
        if math.isfinite(t):
            assert _signal(synthetic, t * (1 - 1e-5)) >= i
            assert _signal(synthetic, t * (1 + 1e-5)) < i
        else:
            assert _signal(synthetic, 1e4) >= i


@pytest.mark.slow
def test_freebits_thresholds_scale_with_beta_eta_dec2(synthetic, fb_thresholds):
    th2 = freebits_thresholds(synthetic, latent_dim=5, lam=0.1, eta_dec=2.0, rtol=1e-6)
    np.testing.assert_allclose(th2, fb_thresholds / 4.0, rtol=3e-6)


def test_freebits_thresholds_without_free_bits_are_the_beta_vae_thresholds(synthetic):
    np.testing.assert_allclose(freebits_thresholds(synthetic, latent_dim=3, lam=0.0),
                               thresholds(synthetic)[:3], rtol=1e-15)
