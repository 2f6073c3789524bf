"""Exact L_VAE: moment form == sample form, analytic gradient == finite differences, and the
closed-form optimum is a stationary point whose loss the evaluator reproduces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import approx_fprime

from postcollapse.theory import (
    FlatVAELoss,
    Moments,
    optimum,
    spectrum,
    vae_loss,
    vae_loss_and_grad,
)
from problems import (
    PROBLEMS,
    SIGMA_KINDS,
    betas_between_thresholds,
    lbfgs_best,
    moments_and_spectrum,
    sigma_arg,
)

SIGMAS = SIGMA_KINDS


def _random_params(rng, d0, d1, d2):
    return {
        "U": rng.normal(size=(d2, d1)),
        "W": rng.normal(size=(d0, d1)) * 0.5,
        "sigma2": rng.uniform(0.1, 2.0, d1),
        "b_e": rng.normal(size=d1),
        "b_d": rng.normal(size=d2),
    }


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d0=st.integers(1, 5),
    d1=st.integers(1, 4),
    d2=st.integers(1, 5),
    plain=st.booleans(),
    beta=st.floats(0.01, 20.0),
    eta_enc=st.floats(0.2, 3.0),
    eta_dec=st.floats(0.2, 3.0),
)
def test_moment_form_equals_sample_form(seed, d0, d1, d2, plain, beta, eta_enc, eta_dec):
    rng = np.random.default_rng(seed)
    n = 40
    x = rng.normal(size=(n, d0)) * rng.uniform(0.1, 3, d0) + rng.normal(size=d0) * 5
    y = None if plain else rng.normal(size=(n, d2)) + x[:, :1]
    d2 = d0 if plain else d2
    p = _random_params(rng, d0, d1, d2)
    kw = {"beta": beta, "eta_enc": eta_enc, "eta_dec": eta_dec}
    l_arrays = vae_loss((x, y), **p, **kw)
    l_moments = vae_loss(Moments.from_arrays(x, y, chunk_size=7), **p, **kw)
    l_grad, _ = vae_loss_and_grad((x, y), **p, **kw)
    assert l_moments == pytest.approx(l_arrays, rel=1e-10)
    assert l_grad == pytest.approx(l_arrays, rel=1e-10)


def test_loss_by_hand_one_dimensional():
    # d0 = d1 = d2 = 1, two samples: every term computed by hand.
    x = np.array([[1.0], [3.0]])
    p = {"U": np.array([[2.0]]), "W": np.array([[0.5]]), "sigma2": np.array([0.25]),
         "b_e": np.array([-1.0]), "b_d": np.array([0.5])}
    mu = 0.5 * x[:, 0] - 1.0  # [-0.5, 0.5]
    recon = np.mean((2.0 * mu + 0.5 - x[:, 0]) ** 2) + 4.0 * 0.25
    beta, ee, ed = 2.0, 0.5, 1.5
    r = 0.25 / ee**2
    kl = beta / (2 * ee**2) * np.mean(mu**2) + beta / 2 * (r - 1 - np.log(r))
    want = recon / (2 * ed**2) + kl
    assert vae_loss(x, **p, beta=beta, eta_enc=ee, eta_dec=ed) == pytest.approx(want, rel=1e-14)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(SIGMAS), plain=st.booleans())
def test_flat_gradient_matches_finite_differences(seed, kind, plain):
    rng = np.random.default_rng(seed)
    d0, d1, d2, n = 4, 3, 3, 30
    x = rng.normal(size=(n, d0)) + 2.0
    y = None if plain else np.tanh(x[:, :d2]) + rng.normal(size=(n, d2))
    f = FlatVAELoss.build(
        (x, y), latent_dim=d1, beta=float(rng.uniform(0.1, 5)), sigma=sigma_arg(kind, d1),
        eta_enc=float(rng.uniform(0.5, 2)), eta_dec=float(rng.uniform(0.5, 2)),
    )
    theta = f.init(rng, scale=0.7)
    _, g = f(theta)
    # Central differences, step chosen for ~1e-10 truncation + rounding error.
    h = 1e-5
    fd = np.array([(f.loss(theta + h * e) - f.loss(theta - h * e)) / (2 * h)
                   for e in np.eye(theta.size)])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * np.abs(g).max())


def test_grad_fields_match_finite_differences_in_sigma2():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(25, 3))
    p = _random_params(rng, 3, 2, 3)
    kw = {"beta": 0.8, "eta_enc": 1.3, "eta_dec": 0.7}
    _, g = vae_loss_and_grad((x, None), **p, **kw)

    def f_s2(s2):
        return vae_loss((x, None), **{**p, "sigma2": s2}, **kw)

    fd = approx_fprime(p["sigma2"], f_s2, 1e-7)
    np.testing.assert_allclose(g.sigma2, fd, rtol=1e-5)
    np.testing.assert_allclose(g.log_sigma2, g.sigma2 * p["sigma2"], rtol=1e-14)


def test_pack_unpack_roundtrip():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4))
    f = FlatVAELoss.build((x, None), latent_dim=2, beta=1.0)
    theta = f.init(rng)
    back = f.pack(**f.unpack(theta))
    np.testing.assert_allclose(back, theta, rtol=1e-14, atol=1e-15)  # log(exp(.)) rounds
    fp = FlatVAELoss.build((x, None), latent_dim=2, beta=1.0, sigma="prior", eta_enc=2.0)
    np.testing.assert_array_equal(fp.unpack(fp.init(rng))["sigma2"], [4.0, 4.0])
    assert fp.size == f.size - 2


# ---------------------------------------------------------------------------------------
# The closed form against the evaluator


def _cases():
    for name in PROBLEMS:
        for kind in SIGMAS:
            yield pytest.param(name, kind, id=f"{name}-{kind}")


@pytest.mark.parametrize(("name", "kind"), list(_cases()))
def test_closed_form_loss_equals_evaluator(name, kind):
    p = PROBLEMS[name]
    x, y, m, spec = moments_and_spectrum(p)
    for beta in betas_between_thresholds(spec.zeta, p.eta_dec):
        o = optimum(spec, latent_dim=p.latent_dim, beta=beta, sigma=sigma_arg(kind, p.latent_dim),
                    eta_enc=p.eta_enc, eta_dec=p.eta_dec)
        kw = {"beta": beta, "eta_enc": p.eta_enc, "eta_dec": p.eta_dec}
        params = {k: getattr(o, k) for k in ("U", "W", "sigma2", "b_e", "b_d")}
        assert vae_loss(m, **params, **kw) == pytest.approx(o.loss, rel=1e-10)
        assert vae_loss((x, y), **params, **kw) == pytest.approx(o.loss, rel=1e-10)


@pytest.mark.parametrize(("name", "kind"), list(_cases()))
def test_gradient_vanishes_at_closed_form_and_perturbations_do_not_help(name, kind):
    p = PROBLEMS[name]
    _, _, m, spec = moments_and_spectrum(p)
    rng = np.random.default_rng(123)
    for beta in betas_between_thresholds(spec.zeta, p.eta_dec):
        o = optimum(spec, latent_dim=p.latent_dim, beta=beta, sigma=sigma_arg(kind, p.latent_dim),
                    eta_enc=p.eta_enc, eta_dec=p.eta_dec)
        f = FlatVAELoss.build(m, latent_dim=p.latent_dim, beta=beta,
                              sigma=sigma_arg(kind, p.latent_dim), eta_enc=p.eta_enc,
                              eta_dec=p.eta_dec)
        theta = f.pack(U=o.U, W=o.W, b_e=o.b_e, b_d=o.b_d, sigma2=o.sigma2)
        loss, g = f(theta)
        assert loss == pytest.approx(o.loss, rel=1e-12)
        # Scale: gradient of L at unit relative change of the parameters ~ |L| / |theta|.
        scale = max(abs(loss), 1.0) / max(np.abs(theta).max(), 1.0)
        assert np.abs(g).max() <= 1e-7 * scale, (beta, np.abs(g).max())
        for size in (1e-4, 1e-2, 0.3):
            for _ in range(10):
                d = rng.normal(size=theta.size) * size * max(np.abs(theta).max(), 1.0)
                assert f.loss(theta + d) >= loss - 1e-12 * abs(loss)


def _exact_plain_data(variances, n=64, seed=0):
    """Plain-VAE data whose population covariance is exactly diag(variances)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(variances)))
    z -= z.mean(0)
    L = np.linalg.cholesky(z.T @ z / n)
    return np.linalg.solve(L, z.T).T * np.sqrt(variances) + 1.0


def test_fixed_sigma_sorted_pairing_beats_paper_pairing():
    # THEORY.md "Any fixed diagonal Sigma": Sigma = diag(2.0, 0.05, 0.6), beta = 1, 4-d data.
    x = _exact_plain_data([6.0, 3.0, 1.5, 0.5])
    m = Moments.from_arrays(x)
    spec = spectrum(m)
    np.testing.assert_allclose(spec.zeta**2, [6.0, 3.0, 1.5, 0.5], rtol=1e-12)
    s2 = np.array([2.0, 0.05, 0.6])
    o = optimum(spec, latent_dim=3, beta=1.0, sigma=s2)
    np.testing.assert_array_equal(o.mode, [2, 0, 1])  # smallest sigma serves mode 0
    # The paper's pairing: latent dimension i serves mode i, same per-mode closed form.
    sig, z = np.sqrt(s2), spec.zeta[:3]
    gap = np.maximum(z - sig, 0.0)
    U = spec.F[:, :3] * np.sqrt(gap / sig)
    W = spec.whitened_G[:, :3] * np.sqrt(sig * gap)
    paper = vae_loss(m, U=U, W=W, sigma2=s2, b_e=-(W.T @ m.mean_x), b_d=m.mean_y, beta=1.0)
    sorted_ = vae_loss(m, U=o.U, W=o.W, sigma2=s2, b_e=o.b_e, b_d=o.b_d, beta=1.0)
    assert sorted_ == pytest.approx(o.loss, rel=1e-12)
    assert sorted_ < paper - 0.5
    best, _, _ = lbfgs_best(m, latent_dim=3, beta=1.0, sigma=s2, n_starts=4)
    assert best == pytest.approx(o.loss, rel=1e-8)
