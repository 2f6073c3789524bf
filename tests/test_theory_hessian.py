"""Origin Hessian (THEORY.md, Theorem 3): closed-form smallest eigenvalue, and the origin is
PSD exactly at complete collapse (never a spurious local minimum)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postcollapse.theory import (
    FlatVAELoss,
    active_modes,
    optimum,
    origin_hessian,
    origin_hessian_min_eig,
)
from problems import PROBLEMS, moments_and_spectrum


def _L(Z, U, V, sigma2, c):
    """L(U, V) = ||U V^T - Z||^2 + Tr(U Sigma U^T) + c ||V||^2 (THEORY.md, Theorem 3)."""
    return np.sum((U @ V.T - Z) ** 2) + np.sum(U * U * sigma2) + c * np.sum(V * V)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d0=st.integers(1, 4),
    d2=st.integers(1, 4),
    d1=st.integers(1, 3),
    sigma2=st.floats(0.05, 5.0),
    beta=st.floats(0.05, 5.0),
    eta_enc=st.floats(0.3, 3.0),
    eta_dec=st.floats(0.3, 3.0),
)
def test_min_eigenvalue_matches_closed_form(seed, d0, d2, d1, sigma2, beta, eta_enc, eta_dec):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(d2, d0)) * rng.uniform(0.1, 3.0)
    H = origin_hessian(Z, sigma2=sigma2, beta=beta, eta_enc=eta_enc, eta_dec=eta_dec,
                       latent_dim=d1)
    zeta1 = np.linalg.svd(Z, compute_uv=False)[0]
    want = origin_hessian_min_eig(zeta1, sigma2=sigma2, beta=beta, eta_enc=eta_enc,
                                  eta_dec=eta_dec)
    got = np.linalg.eigvalsh(H)[0]
    assert got == pytest.approx(want, abs=1e-10 * max(1.0, np.abs(H).max()))
    # PSD iff zeta1^2 <= sigma^2 c.
    c = beta * eta_dec**2 / eta_enc**2
    if abs(zeta1**2 - sigma2 * c) > 1e-9 * max(zeta1**2, 1.0):
        assert (want >= 0) == (zeta1**2 <= sigma2 * c)


def test_hessian_matches_finite_differences_of_L():
    rng = np.random.default_rng(1)
    d0, d1, d2 = 3, 2, 4
    Z = rng.normal(size=(d2, d0))
    s2 = np.array([0.7, 1.9])  # per-dimension variances are allowed too
    c = 0.8
    H = origin_hessian(Z, sigma2=s2, beta=c, latent_dim=d1)  # eta's = 1: c = beta
    nu, n = d2 * d1, d2 * d1 + d0 * d1

    def f(v):
        return _L(Z, v[:nu].reshape(d2, d1), v[nu:].reshape(d0, d1), s2, c)

    h = 1e-3  # L is quartic; the quartic term's error at the origin is O(h^2)
    E = np.eye(n) * h
    fd = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            fd[i, j] = (f(E[i] + E[j]) - f(E[i] - E[j]) - f(E[j] - E[i]) + f(-E[i] - E[j])) / (
                4 * h * h
            )
    np.testing.assert_allclose(H, fd, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    zeta=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=5),
    beta=st.floats(1e-3, 30.0),
    eta_enc=st.floats(0.2, 3.0),
    eta_dec=st.floats(0.2, 3.0),
)
def test_psd_iff_complete_collapse_at_sigma_eq_eta_enc(zeta, beta, eta_enc, eta_dec):
    zeta = np.sort(np.asarray(zeta))[::-1]
    lam_min = origin_hessian_min_eig(zeta[0], sigma2=eta_enc**2, beta=beta, eta_enc=eta_enc,
                                     eta_dec=eta_dec)
    k = active_modes(zeta, beta, eta_dec=eta_dec)
    margin = abs(zeta[0] ** 2 - beta * eta_dec**2) / max(zeta[0] ** 2, beta * eta_dec**2)
    if margin > 1e-9:  # away from the threshold itself, where lam_min == 0 up to rounding
        assert (lam_min >= 0) == (k == 0)


def _flat_hessian_at_origin(f, theta0, h=1e-5):
    """Hessian of f's gradient by central differences (exact for a cubic gradient up to h^2)."""
    n = theta0.size
    H = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = h
        H[:, i] = (f(theta0 + e)[1] - f(theta0 - e)[1]) / (2 * h)
    return 0.5 * (H + H.T)


@pytest.mark.parametrize("name", ["plain", "conditional_d0_gt_d2", "nonlinear_y",
                                  "duplicated_column", "eta_both", "eta_enc"])
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_vae_loss_hessian_at_origin_psd_iff_complete_collapse(name, factor):
    # Theorem 3 carried to L_VAE in (U, W, b_e, b_d) with Sigma at the prior: the origin
    # (U = W = 0, b_e = 0, b_d = E y) is a minimum iff beta >= beta_1*, a saddle otherwise.
    p = PROBLEMS[name]
    _, _, m, spec = moments_and_spectrum(p)
    beta = factor * spec.zeta[0] ** 2 / p.eta_dec**2
    f = FlatVAELoss.build(m, latent_dim=p.latent_dim, beta=beta, sigma="prior",
                          eta_enc=p.eta_enc, eta_dec=p.eta_dec)
    d0, d1, d2 = spec.d0, p.latent_dim, spec.d2
    theta0 = f.pack(U=np.zeros((d2, d1)), W=np.zeros((d0, d1)), b_e=np.zeros(d1), b_d=m.mean_y)
    assert np.abs(f(theta0)[1]).max() < 1e-12  # the origin is a stationary point
    eig = np.linalg.eigvalsh(_flat_hessian_at_origin(f, theta0))
    scale = np.abs(eig).max()
    collapsed = active_modes(spec, beta, eta_dec=p.eta_dec) == 0
    assert collapsed == (factor > 1)
    if collapsed:
        assert eig[0] >= -1e-8 * scale
        # and then the origin is the global minimum: the closed form agrees.
        o = optimum(spec, latent_dim=p.latent_dim, beta=beta, sigma="prior",
                    eta_enc=p.eta_enc, eta_dec=p.eta_dec)
        assert not o.active.any()
        assert f.loss(theta0) == pytest.approx(o.loss, rel=1e-12)
    else:
        assert eig[0] < -1e-4 * scale


@pytest.mark.parametrize("s2", [0.3, 2.5])
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_vae_loss_hessian_at_origin_fixed_sigma(s2, factor):
    # Sigma = s2 I != eta_enc^2 I: PSD iff zeta_1^2 <= s2 * beta eta_dec^2 / eta_enc^2.
    p = PROBLEMS["eta_enc"]
    _, _, m, spec = moments_and_spectrum(p)
    beta = factor * spec.zeta[0] ** 2 * p.eta_enc**2 / (s2 * p.eta_dec**2)
    d0, d1, d2 = spec.d0, p.latent_dim, spec.d2
    f = FlatVAELoss.build(m, latent_dim=d1, beta=beta, sigma=np.full(d1, s2),
                          eta_enc=p.eta_enc, eta_dec=p.eta_dec)
    theta0 = f.pack(U=np.zeros((d2, d1)), W=np.zeros((d0, d1)), b_e=np.zeros(d1), b_d=m.mean_y)
    eig = np.linalg.eigvalsh(_flat_hessian_at_origin(f, theta0))
    lam_min = origin_hessian_min_eig(spec.zeta[0], sigma2=s2, beta=beta, eta_enc=p.eta_enc,
                                     eta_dec=p.eta_dec)
    assert (lam_min >= 0) == (factor > 1)
    if factor > 1:
        assert eig[0] >= -1e-8 * np.abs(eig).max()
    else:
        assert eig[0] < -1e-4 * np.abs(eig).max()
