"""Two-level linear VAE: closed form against direct optimisation of the exact loss."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from postcollapse.theory import Moments, optimum, spectrum
from postcollapse.theory.hierarchical import (
    FlatHierarchicalLoss,
    HierarchicalParams,
    hierarchical_loss,
    hierarchical_loss_and_grad,
    hierarchical_optimum,
)

LBFGS = {"maxiter": 20000, "maxfun": 40000, "gtol": 1e-12, "ftol": 1e-15, "maxcor": 30}


def _problem(seed, *, d0, conditional):
    """Raw data far from zero (means ~5), plain or conditional (with a nonlinear residual)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d0, d0)))
    x = (rng.normal(size=(200, d0)) * np.linspace(2.0, 0.4, d0)) @ q.T + 5.0
    if not conditional:
        return Moments.from_arrays(x)
    M = rng.normal(size=(3, d0))
    y = x @ M.T + 0.3 * np.tanh(x[:, :3]) - 4.0
    return Moments.from_arrays(x, y)


def _direct(m, *, seed=0, n_starts=3, **kw):
    f = FlatHierarchicalLoss.build(m, **kw)
    rng = np.random.default_rng(seed)
    best = np.inf
    for _ in range(n_starts):
        res = minimize(f, f.init(rng), jac=True, method="L-BFGS-B", options=LBFGS)
        best = min(best, float(res.fun))
    return best


settings_kw = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
cases = st.tuples(
    st.integers(0, 10**6),  # seed
    st.integers(3, 4),  # d0
    st.booleans(),  # conditional
    st.sampled_from([(3, 3), (3, 2), (2, 1), (2, 3)]),  # (d1, d2), d2 < d1 included
    st.sampled_from([(0.5, 1.0), (1.0, 0.3), (0.7, 2.0), (2.0, 0.8)]),  # beta2 above/below
    st.sampled_from([0.5, 0.8, 1.2]),  # sigma1
    st.sampled_from([(1.0, 1.0), (1.3, 0.8), (0.7, 1.1)]),  # (eta_enc, eta_dec)
)


def _check_case(case, n_starts):
    seed, d0, cond, (d1, d2), (b1, b2), s1, (ee, ed) = case
    m = _problem(seed, d0=d0, conditional=cond)
    kw = dict(latent_dim=d1, latent_dim2=d2, beta=b1, beta2=b2, sigma1=s1, eta_enc=ee,
              eta_dec=ed)
    h = hierarchical_optimum(spectrum(m), **kw)
    direct = _direct(m, n_starts=n_starts, **kw)
    # The direct minimum is never (meaningfully) below the closed form, and reaches it.
    assert direct == pytest.approx(h.loss, rel=1e-8, abs=1e-10)
    # The closed-form parameters attain the closed-form value.
    val = hierarchical_loss(m, h.params, beta=b1, beta2=b2, eta_enc=ee, eta_dec=ed)
    assert val == pytest.approx(h.loss, rel=1e-12, abs=1e-12)


@settings(max_examples=4, **settings_kw)
@given(cases)
def test_closed_form_matches_direct_optimisation(case):
    _check_case(case, n_starts=3)


@pytest.mark.slow
@settings(max_examples=6, **settings_kw)
@given(cases)
def test_closed_form_matches_direct_optimisation_many(case):
    _check_case(case, n_starts=4)


@settings(max_examples=30, **settings_kw)
@given(cases)
def test_closed_form_parameters_attain_the_closed_form_loss(case):
    seed, d0, cond, (d1, d2), (b1, b2), s1, (ee, ed) = case
    m = _problem(seed, d0=d0, conditional=cond)
    h = hierarchical_optimum(spectrum(m), latent_dim=d1, latent_dim2=d2, beta=b1, beta2=b2,
                             sigma1=s1, eta_enc=ee, eta_dec=ed)
    val = hierarchical_loss(m, h.params, beta=b1, beta2=b2, eta_enc=ee, eta_dec=ed)
    assert val == pytest.approx(h.loss, rel=1e-12, abs=1e-12)
    # Singular values: whitened level-1 encoder and level-2 decoder.
    A = m.cov_x
    w, v = np.linalg.eigh(A)
    a_half = (v * np.sqrt(np.maximum(w, 0))) @ v.T
    sv1 = np.linalg.svd(a_half @ h.params.W1, compute_uv=False)
    np.testing.assert_allclose(np.sort(sv1), np.sort(h.lambda1), atol=1e-10)
    sv2 = np.linalg.svd(h.params.U2, compute_uv=False)
    np.testing.assert_allclose(np.sort(sv2), np.sort(h.omega)[-sv2.size:], atol=1e-10)
    assert h.active_level2.sum() <= d2


def test_gradient_matches_finite_differences():
    m = _problem(3, d0=4, conditional=True)
    f = FlatHierarchicalLoss.build(m, latent_dim=3, latent_dim2=2, beta=0.7, beta2=1.3,
                                   eta_enc=1.2, eta_dec=0.9)
    th = f.init(np.random.default_rng(1), scale=0.5)
    _, g = f(th)
    eps = 1e-6
    num = np.array([(f(th + eps * e)[0] - f(th - eps * e)[0]) / (2 * eps)
                    for e in np.eye(th.size)])
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-6 * np.abs(g).max())
    loss, grad = hierarchical_loss_and_grad(m, f.unpack(th), beta=0.7, beta2=1.3,
                                            eta_enc=1.2, eta_dec=0.9)
    assert loss == pytest.approx(f(th)[0], rel=1e-14)
    assert isinstance(grad, HierarchicalParams)


def _dang(zeta, *, sigma1, eta_enc, eta_dec, beta1, beta2):
    """Dang et al.'s published singular values (their utils.py, sigma1 fixed, S2 learnable,
    d2 >= d1), transcribed: (lambda, omega) per mode."""
    c2 = (eta_dec / eta_enc) ** 2
    lam, om = [], []
    for th in zeta:
        if sigma1**2 >= beta2 / beta1 * eta_dec**2:
            lam.append(sigma1 / (np.sqrt(beta2) * eta_dec)
                       * np.sqrt(max(0.0, th**2 - beta2 * eta_dec**2)))
            om.append(np.sqrt(max((sigma1**2 - beta2 / beta1 * eta_dec**2) / eta_enc**2,
                                  sigma1**2 * th**2 / (beta2 * eta_enc**2 * eta_dec**2)
                                  - c2 * beta2 / beta1)))
        elif sigma1**2 * th**2 / (beta2 * eta_dec**2) < beta2 / beta1 * eta_dec**2:
            lam.append(np.sqrt(max(0.0, sigma1 / np.sqrt(beta1) * (th - np.sqrt(beta1) * sigma1))))
            om.append(0.0)
        else:
            lam.append(sigma1 / np.sqrt(beta2) / eta_dec * np.sqrt(th**2 - beta2 * eta_dec**2))
            om.append(np.sqrt(sigma1**2 * th**2 / (beta2 * eta_enc**2 * eta_dec**2)
                              - beta2 / beta1 * c2))
    return np.array(lam), np.array(om)


@pytest.mark.parametrize("sigma1", [0.4, 0.9, 1.5])
@pytest.mark.parametrize("betas", [(1.0, 0.5), (0.5, 1.0), (2.0, 3.0)])
def test_agrees_with_dang_et_al(sigma1, betas):
    m = _problem(7, d0=4, conditional=False)
    spec = spectrum(m)
    b1, b2 = betas
    h = hierarchical_optimum(spec, latent_dim=3, latent_dim2=3, beta=b1, beta2=b2,
                             sigma1=sigma1, eta_enc=1.2, eta_dec=0.9)
    lam, om = _dang(spec.zeta[:3], sigma1=sigma1, eta_enc=1.2, eta_dec=0.9, beta1=b1,
                    beta2=b2)
    np.testing.assert_allclose(h.lambda1, lam, rtol=1e-12, atol=1e-12)
    omega_by_mode = np.zeros(3)
    for j, i in enumerate(h.level2_mode):
        if i >= 0:
            omega_by_mode[i] = h.omega[j]
    np.testing.assert_allclose(omega_by_mode, om, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("betas", [(0.6, 1.5), (1.0, 1.0)])
def test_both_learnable_level2_collapses(conditional, betas):
    """beta2 > beta1: min equals the one-level VAE at beta1 and level 2 is dead;
    beta2 == beta1: same value (flat valley)."""
    b1, b2 = betas
    m = _problem(11, d0=3, conditional=conditional)
    spec = spectrum(m)
    kw = dict(latent_dim=2, latent_dim2=2, beta=b1, beta2=b2, eta_enc=1.3, eta_dec=0.8)
    h = hierarchical_optimum(spec, **kw)
    one = optimum(spec, latent_dim=2, beta=b1, eta_dec=0.8)
    assert h.loss == pytest.approx(one.loss, rel=1e-12)
    assert not h.active_level2.any()
    assert h.regime == ("flat valley" if b1 == b2 else "level 2 collapsed")
    val = hierarchical_loss(m, h.params, beta=b1, beta2=b2, eta_enc=1.3, eta_dec=0.8)
    assert val == pytest.approx(h.loss, rel=1e-12)
    direct = _direct(m, n_starts=3, **kw)
    assert direct == pytest.approx(h.loss, rel=1e-8)


def _unbounded_path(m, spec, t, *, b1, b2, eta_enc, eta_dec):
    """Level 1 silent except a level-1 variance t on latent 0, which level 2 models."""
    d0, dy = m.mean_x.size, m.mean_y.size
    bp = b2 * eta_dec**2 / b1
    U2 = np.zeros((2, 1))
    W2 = np.zeros((2, 1))
    U2[0, 0] = np.sqrt(t - bp) / eta_enc
    W2[0, 0] = eta_enc * np.sqrt(t - bp) / t
    return HierarchicalParams(
        W1=np.zeros((d0, 2)), b1=np.zeros(2), s1=np.array([t, eta_dec**2]),
        U1=np.zeros((dy, 2)), c1=m.mean_y.copy(), W2=W2, b2=np.zeros(1),
        s2=np.array([bp * eta_enc**2 / t]), U2=U2, c2=np.zeros(2),
    )


def test_both_learnable_unbounded_below_for_beta2_below_beta1():
    m = _problem(5, d0=3, conditional=True)
    spec = spectrum(m)
    b1, b2 = 1.0, 0.8
    with pytest.raises(ValueError, match=r"unbounded below.*regime 'unbounded'"):
        hierarchical_optimum(spec, latent_dim=2, latent_dim2=1, beta=b1, beta2=b2)
    ts = 10.0 ** np.arange(2, 9)
    losses = np.array([hierarchical_loss(m, _unbounded_path(m, spec, t, b1=b1, b2=b2,
                                                             eta_enc=1.0, eta_dec=1.0),
                                         beta=b1, beta2=b2) for t in ts])
    # Exactly linear in log t with slope (beta2 - beta1)/2 < 0: no lower bound.
    slopes = np.diff(losses) / np.diff(np.log(ts))
    np.testing.assert_allclose(slopes, (b2 - b1) / 2, rtol=1e-6)
    assert np.all(np.diff(losses) < 0)


def test_bad_inputs():
    spec = spectrum(_problem(0, d0=3, conditional=False))
    with pytest.raises(ValueError, match="beta2 must be"):
        hierarchical_optimum(spec, latent_dim=2, latent_dim2=1, beta=1.0, beta2=-1.0,
                             sigma1=1.0)
    with pytest.raises(ValueError, match="sigma1 must be"):
        hierarchical_optimum(spec, latent_dim=2, latent_dim2=1, beta=1.0, beta2=1.0,
                             sigma1=0.0)
    with pytest.raises(ValueError, match="latent_dim2 must be"):
        hierarchical_optimum(spec, latent_dim=2, latent_dim2=0, beta=1.0, beta2=1.0,
                             sigma1=1.0)
    with pytest.raises(TypeError, match="expected a Spectrum"):
        hierarchical_optimum("x", latent_dim=2, latent_dim2=1, beta=1.0, beta2=1.0)
