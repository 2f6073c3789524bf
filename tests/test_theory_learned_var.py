"""Learned decoder variance (docs/THEORY.md, "Learned decoder variance").

With v = eta_dec^2 a parameter, the objective is the beta-NLL L_VAE(v) + (d2/2) log(2 pi v).
Checked here against independent computations:

- direct optimisation: scipy L-BFGS over (U, W, log Sigma, biases, log v) from several random
  starts lands on the closed-form NLL, on random plain, conditional and rank-deficient
  problems, for betas on both sides of a threshold, for learnable, prior and fixed Sigma;
- the threshold formula against bisection on the optimum's active count;
- the "consecutive conditions meet" theorem: exactly one k is self-consistent;
- scikit-learn / probabilistic PCA at beta = 1: v = PCA.noise_variance_ * (N-1)/N, and -NLL
  is the pPCA log-likelihood (closed form and the Gaussian density of the fitted model);
  PCA.score differs from it only by the N vs N-1 normalisation.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from postcollapse.theory import (
    FlatVAELoss,
    Moments,
    active_modes,
    beta_interval,
    learned_eta_dec2,
    min_loss,
    optimal_sigma2,
    optimum,
    spectrum,
    thresholds,
    vae_nll,
)
from problems import PROBLEMS, fixed_sigma2, moments_and_spectrum

# Measured worst relative NLL gap over the slow property run is ~1e-13; the acceptance
# tolerance is 1e-8 (relative to max(|NLL|, 1): the NLL can be near 0 or negative).
RTOL = 1e-8
OPTIONS = {"maxiter": 20000, "maxfun": 40000, "gtol": 1e-12, "ftol": 1e-15, "maxcor": 30}


def lbfgs_nll(m, *, latent_dim, beta, sigma, eta_enc=1.0, seed=0, n_starts=3):
    """Best-of-starts L-BFGS minimum of the exact beta-NLL over every parameter and log v."""
    f = FlatVAELoss.build(m, latent_dim=latent_dim, beta=beta, sigma=sigma, eta_enc=eta_enc,
                          eta_dec="learn")
    rng = np.random.default_rng(seed)
    best, best_x = np.inf, None
    for _ in range(n_starts):
        res = minimize(f, f.init(rng), jac=True, method="L-BFGS-B", options=OPTIONS)
        if res.fun < best:
            best, best_x = float(res.fun), res.x
    return best, f.unpack(best_x)


def random_problem(seed, kind, d0, d2):
    """(Moments, Spectrum) of a small random plain / conditional / rank-deficient problem."""
    rng = np.random.default_rng(seed)
    n = 40
    x = rng.normal(size=(n, d0)) * rng.uniform(0.3, 2.0, d0) + rng.normal(size=d0)
    if kind == "rank_deficient":  # a duplicated and a constant column: rank d0 of d0 + 2
        x = np.column_stack([x, x[:, 0], np.full(n, 2.0)])
    if kind == "conditional":
        y = x @ rng.normal(size=(d0, d2)) + 0.3 * rng.normal(size=(n, d2))
    elif kind == "rank_deficient" and d2 % 2:
        y = x @ rng.normal(size=(x.shape[1], d2)) + 0.2 * rng.normal(size=(n, d2))
    else:
        y = None
    m = Moments.from_arrays(x, y)
    return m, spectrum(m)


def _sigma(kind, d1):
    return fixed_sigma2(d1) if kind == "fixed" else kind


def _check_lbfgs(m, spec, *, d1, beta, sigma, eta_enc, seed):
    o = optimum(spec, latent_dim=d1, beta=beta, sigma=sigma, eta_enc=eta_enc, eta_dec="learn")
    best, p = lbfgs_nll(m, latent_dim=d1, beta=beta, sigma=sigma, eta_enc=eta_enc, seed=seed)
    gap = (best - o.nll) / max(abs(o.nll), 1.0)
    assert gap >= -1e-10, (beta, best, o.nll)  # the closed form is the global minimum
    assert gap <= RTOL, (beta, best, o.nll)
    np.testing.assert_allclose(p["eta_dec2"], o.eta_dec2, rtol=1e-4)
    # The closed-form parameters evaluate (exactly, on the moments) to the reported NLL.
    nll = vae_nll(m, U=o.U, W=o.W, sigma2=o.sigma2, b_e=o.b_e, b_d=o.b_d, beta=beta,
                  eta_enc=eta_enc, eta_dec=o.eta_dec)
    np.testing.assert_allclose(nll, o.nll, rtol=1e-12, atol=1e-12)
    return gap


def _lbfgs_property(seed, kind, sig, d0, d2, d1, which, side, dist, eta_enc):
    m, spec = random_problem(seed, kind, d0, d2)
    t = thresholds(spec, eta_dec="learn", sigma="prior" if sig == "prior" else "learnable")
    t = t[t > 0]
    assume(t.size > 0)
    i = which % t.size
    beta = float(t[i] * np.exp(side * dist))
    # Keep clear of every threshold, where L-BFGS converges sublinearly.
    assume(np.all(np.abs(np.log(t / beta)) > 0.03))
    try:
        learned_eta_dec2(spec, [beta], latent_dim=d1, sigma=_sigma(sig, d1), eta_enc=eta_enc)
    except ValueError as exc:  # unbounded NLL: tested on its own below
        assert "unbounded" in str(exc)
        assume(False)
    _check_lbfgs(m, spec, d1=d1, beta=beta, sigma=_sigma(sig, d1), eta_enc=eta_enc,
                 seed=seed % 1000)


_PROPERTY = dict(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["plain", "conditional", "rank_deficient"]),
    sig=st.sampled_from(["learnable", "prior", "fixed"]),
    d0=st.integers(1, 4),
    d2=st.integers(1, 4),
    d1=st.integers(1, 3),
    which=st.integers(0, 5),
    side=st.sampled_from([-1.0, 1.0]),
    dist=st.floats(0.05, 0.7),
    eta_enc=st.floats(0.5, 2.0),
)


@settings(max_examples=6, deadline=None)
@given(**_PROPERTY)
def test_lbfgs_lands_on_closed_form(seed, kind, sig, d0, d2, d1, which, side, dist, eta_enc):
    _lbfgs_property(seed, kind, sig, d0, d2, d1, which, side, dist, eta_enc)


@pytest.mark.slow
@settings(max_examples=80, deadline=None)
@given(**_PROPERTY)
def test_lbfgs_lands_on_closed_form_many(seed, kind, sig, d0, d2, d1, which, side, dist,
                                        eta_enc):
    _lbfgs_property(seed, kind, sig, d0, d2, d1, which, side, dist, eta_enc)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["learnable", "prior"])
@pytest.mark.parametrize("name", ["conditional_d0_lt_d2", "nonlinear_y", "duplicated_column",
                                  "latent_below_dstar"])
def test_lbfgs_both_sides_of_every_threshold(name, sig):
    p = PROBLEMS[name]
    _, _, m, spec = moments_and_spectrum(p)
    t = thresholds(spec, eta_dec="learn", sigma=sig)
    for ti in t[: p.latent_dim + 1]:
        for beta in (ti * 0.9, ti * 1.1):
            try:
                learned_eta_dec2(spec, [beta], latent_dim=p.latent_dim, sigma=sig)
            except ValueError:
                continue  # unbounded below (r = 0 and every mode kept)
            _check_lbfgs(m, spec, d1=p.latent_dim, beta=float(beta), sigma=sig, eta_enc=1.3,
                         seed=3)


# ------------------------------------------------------------------------- thresholds


def _bisect_threshold(spec, i, sig):
    """The beta where the optimum with latent_dim = i loses its i-th mode, by bisection."""
    def n_active(beta):
        return optimum(spec, latent_dim=i, beta=beta, sigma=sig, eta_dec="learn").n_active

    lo, hi = 1e-6, 1e6
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        if n_active(mid) >= i:
            lo = mid
        else:
            hi = mid
        if hi / lo - 1 < 1e-13:
            break
    return np.sqrt(lo * hi)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["conditional", "rank_deficient"]),
       d0=st.integers(2, 4), d2=st.integers(2, 4), sig=st.sampled_from(["learnable", "prior"]))
def test_threshold_formula_matches_bisection(seed, kind, d0, d2, sig):
    m, spec = random_problem(seed, kind, d0, d2)
    t = thresholds(spec, eta_dec="learn", sigma=sig)
    assert np.all(np.diff(t) <= 1e-12 * t[0])  # non-increasing
    for i in range(1, t.size + 1):
        if t[i - 1] == 0:
            continue
        try:
            got = _bisect_threshold(spec, i, sig)
        except ValueError:  # unbounded for small beta (mode i explains y exactly)
            continue
        np.testing.assert_allclose(got, t[i - 1], rtol=1e-9)


def test_threshold_formula_by_hand():
    # zeta^2 = (4, 1), r = 2, d2 = 3: beta_1* = 3*4/(2+5) = 12/7, beta_2* = 3*1/(2+1+1) = 3/4;
    # prior: beta_2* = 3*1/(2+1+1*2) = 3/5.
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]) * np.sqrt(2.0)
    w = np.array([1.0, 1.0, -1.0, -1.0]) * np.sqrt(2.0)  # orthogonal to x: residual var 2
    y = np.column_stack([x[:, 1], x[:, 0], w])  # Var x = (1, 4): zeta = (4/2, 1/1)
    spec = spectrum(Moments.from_arrays(x, y))
    np.testing.assert_allclose(spec.zeta**2, [4.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(spec.residual, 2.0, rtol=1e-12)
    np.testing.assert_allclose(thresholds(spec, eta_dec="learn"), [12 / 7, 3 / 4], rtol=1e-12)
    np.testing.assert_allclose(thresholds(spec, eta_dec="learn", sigma="prior"),
                               [12 / 7, 3 / 5], rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["plain", "conditional",
                                                             "rank_deficient"]),
       d0=st.integers(1, 4), d2=st.integers(1, 4), log_beta=st.floats(-1.5, 2.0))
def test_exactly_one_k_is_self_consistent(seed, kind, d0, d2, log_beta):
    # zeta_k^2 > beta v_k >= zeta_{k+1}^2 holds for exactly one k (d2 > k beta), the one the
    # thresholds count: the conditions of consecutive k meet.
    _, spec = random_problem(seed, kind, d0, d2)
    beta = 10.0**log_beta
    z2 = np.concatenate([spec.zeta**2, [0.0]])
    R = spec.residual + np.array([z2[k:].sum() for k in range(spec.d_star + 1)])
    consistent = []
    for k in range(spec.d_star + 1):
        if spec.d2 - k * beta <= 0 or R[k] <= 1e-12 * R[0]:
            continue
        v = R[k] / (spec.d2 - k * beta)
        left = k == 0 or z2[k - 1] > beta * v
        if left and beta * v >= z2[k]:
            consistent.append(k)
    t = thresholds(spec, eta_dec="learn")
    assume(np.all(np.abs(t - beta) > 1e-9 * beta))
    k_thr = int(np.sum(t > beta))
    if R[k_thr] <= 1e-12 * R[0]:
        return  # the top k_thr modes explain y exactly: unbounded, no stationary point
    assert consistent == [k_thr]


def test_active_modes_and_beta_interval_learn():
    _, _, m, spec = moments_and_spectrum(PROBLEMS["nonlinear_y"])
    t = thresholds(spec, eta_dec="learn")
    for k in range(t.size + 1):
        lo, hi = beta_interval(spec, k, eta_dec="learn")
        beta = np.sqrt(lo * hi) if 0 < lo and np.isfinite(hi) else (2 * lo if lo else hi / 2)
        assert active_modes(spec, beta, eta_dec="learn") == k
        assert optimum(spec, latent_dim=t.size, beta=beta, eta_dec="learn").n_active == k


# ------------------------------------------------------------- vectorised = scalar forms


@pytest.mark.parametrize("sig", ["learnable", "prior", "fixed"])
@pytest.mark.parametrize("eta_dec", ["learn", 0.7])
def test_min_loss_optimal_sigma2_learned_v_match_optimum(sig, eta_dec):
    p = PROBLEMS["nonlinear_y"]
    _, _, m, spec = moments_and_spectrum(p)
    d1 = 3
    sigma = _sigma(sig, d1)
    betas = np.geomspace(0.05, 20.0, 13)
    loss = min_loss(spec, betas, latent_dim=d1, sigma=sigma, eta_enc=1.2, eta_dec=eta_dec)
    nll = min_loss(spec, betas, latent_dim=d1, sigma=sigma, eta_enc=1.2, eta_dec=eta_dec,
                   nll=True)
    s2 = optimal_sigma2(spec, betas, latent_dim=d1, sigma=sigma, eta_enc=1.2, eta_dec=eta_dec)
    assert s2.shape == (13, d1)
    for j, beta in enumerate(betas):
        o = optimum(spec, latent_dim=d1, beta=beta, sigma=sigma, eta_enc=1.2, eta_dec=eta_dec)
        np.testing.assert_allclose([loss[j], nll[j]], [o.loss, o.nll], rtol=1e-13)
        np.testing.assert_allclose(s2[j], o.sigma2, rtol=1e-13)
        np.testing.assert_allclose(o.nll, o.loss + spec.d2 / 2 * np.log(2 * np.pi * o.eta_dec2),
                                   rtol=1e-13)
        if eta_dec == "learn":
            v = learned_eta_dec2(spec, [beta], latent_dim=d1, sigma=sigma, eta_enc=1.2)
            np.testing.assert_allclose(v, o.eta_dec2, rtol=1e-13)
    if eta_dec == "learn":
        # NLL is minimised over v: it lies below the NLL at any fixed eta_dec.
        for e in (0.3, 0.7, 1.5):
            fixed = min_loss(spec, betas, latent_dim=d1, sigma=sigma, eta_enc=1.2, eta_dec=e,
                             nll=True)
            assert np.all(nll <= fixed + 1e-12)


def test_learnable_sigma_v_closed_form():
    # v = (r + sum_{i>k} zeta_i^2) / (d2 - k beta) with k active modes (all modes past k).
    _, _, m, spec = moments_and_spectrum(PROBLEMS["nonlinear_y"])
    for beta in (0.2, 0.6, 1.5, 5.0):
        o = optimum(spec, latent_dim=2, beta=beta, eta_dec="learn")
        k = o.n_active
        v = (spec.residual + np.sum(spec.zeta[k:] ** 2)) / (spec.d2 - k * beta)
        np.testing.assert_allclose(o.eta_dec2, v, rtol=1e-13)


# --------------------------------------------------------------------- scikit-learn / pPCA


@pytest.fixture(scope="module")
def pca_data():
    rng = np.random.default_rng(11)
    n, d = 200, 6
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (rng.normal(size=(n, d)) * np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.3])) @ q.T + 4.0
    return x


@pytest.mark.parametrize("q", [1, 2, 3, 4, 5])
def test_beta_1_is_probabilistic_pca(pca_data, q):
    from scipy.stats import multivariate_normal
    from sklearn.decomposition import PCA

    x = pca_data
    n, d = x.shape
    spec = spectrum(Moments.from_arrays(x))
    eta_enc = 1.3  # any prior scale: it is absorbed by U
    o = optimum(spec, latent_dim=q, beta=1.0, eta_enc=eta_enc, eta_dec="learn")
    pca = PCA(n_components=q, svd_solver="full").fit(x)
    # learned v = mean of the discarded eigenvalues of the 1/N covariance (Tipping & Bishop)
    np.testing.assert_allclose(o.eta_dec2, pca.noise_variance_ * (n - 1) / n, rtol=1e-10)
    assert o.n_active == q
    # -NLL = pPCA maximum log-likelihood per example, closed form
    lam = np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1]
    ll = -0.5 * (d * np.log(2 * np.pi) + np.sum(np.log(lam[:q])) + (d - q) * np.log(o.eta_dec2)
                 + d)
    np.testing.assert_allclose(-o.nll, ll, rtol=1e-10)
    # ... and the Gaussian density of the VAE's marginal p(x) = N(b_d, eta_enc^2 U U^T + v I)
    cov = eta_enc**2 * o.U @ o.U.T + o.eta_dec2 * np.eye(d)
    dens = multivariate_normal(o.b_d, cov).logpdf(x).mean()
    np.testing.assert_allclose(dens, ll, rtol=1e-10)
    # PCA.score uses the N-1 covariance (every eigenvalue, noise included, times N/(N-1)):
    # score = ll - (d/2) (log(N/(N-1)) - 1/N); the two differ only by that normalisation.
    np.testing.assert_allclose(pca.score(x), ll - d / 2 * (np.log(n / (n - 1)) - 1 / n),
                               rtol=1e-10)


# ------------------------------------------------------------------------- bad input


def test_unbounded_nll_raises_and_is_unbounded():
    # Plain VAE, latent_dim >= rank: the kept modes explain x exactly, so v -> 0.
    _, _, m, spec = moments_and_spectrum(PROBLEMS["constant_column"])  # rank 4 of 5
    with pytest.raises(ValueError, match=r"unbounded below at beta=0\.5.*use beta >= 1\.25"):
        optimum(spec, latent_dim=4, beta=0.5, eta_dec="learn")
    with pytest.raises(ValueError, match="unbounded below"):
        min_loss(spec, [0.5, 3.0], latent_dim=5, eta_dec="learn")
    # It is: the minimum over the rest at fixed v falls without bound as v -> 0.
    vals = [float(min_loss(spec, [0.5], latent_dim=4, eta_dec=e, nll=True)[0])
            for e in (1e-2, 1e-4, 1e-6)]
    assert vals[0] > vals[1] > vals[2] and vals[2] < -10.0
    # Beyond beta = d2 / k the same problem is bounded (and k < rank always is).
    o = optimum(spec, latent_dim=4, beta=1.3, eta_dec="learn")
    assert o.eta_dec2 > 0 and np.isfinite(o.nll)
    assert np.isfinite(optimum(spec, latent_dim=3, beta=0.5, eta_dec="learn").nll)
    # Sigma at the prior keeps v > 0: sqrt(v) >= sqrt(beta) sum zeta_i / d2.
    assert optimum(spec, latent_dim=4, beta=0.5, sigma="prior", eta_dec="learn").eta_dec2 > 0


def test_bad_inputs():
    _, _, m, spec = moments_and_spectrum(PROBLEMS["plain"])
    with pytest.raises(TypeError, match="need a Spectrum .*not bare zeta"):
        thresholds(spec.zeta, eta_dec="learn")
    with pytest.raises(TypeError, match="need a Spectrum"):
        active_modes([2.0, 1.0], 0.5, eta_dec="learn")
    with pytest.raises(TypeError, match="needs a Spectrum"):
        optimal_sigma2([2.0, 1.0], [0.5], latent_dim=2, eta_dec="learn")
    with pytest.raises(ValueError, match=r"eta_dec must be a number > 0 or 'learn', got 'lern'"):
        optimum(spec, latent_dim=2, beta=1.0, eta_dec="lern")
    with pytest.raises(ValueError, match=r"eta_dec must be a finite number > 0"):
        thresholds(spec, eta_dec=-1.0)
    with pytest.raises(ValueError, match="sigma must be 'learnable' or 'prior' for thresholds"):
        thresholds(spec, eta_dec="learn", sigma="fixed")
    x = np.random.default_rng(0).normal(size=(10, 2))
    flat = Moments.from_arrays(x, np.ones((10, 2)))
    with pytest.raises(ValueError, match="target has zero variance"):
        optimum(spectrum(flat), latent_dim=1, beta=1.0, eta_dec="learn")


def test_flat_loss_learned_v_gradient():
    _, _, m, _ = moments_and_spectrum(PROBLEMS["nonlinear_y"])
    f = FlatVAELoss.build(m, latent_dim=2, beta=0.7, eta_dec="learn")
    theta = f.init(np.random.default_rng(1))
    val, g = f(theta)
    p = f.unpack(theta)
    ref = vae_nll(m, U=p["U"], W=p["W"], sigma2=p["sigma2"], b_e=p["b_e"], b_d=p["b_d"],
                  beta=0.7, eta_dec=np.sqrt(p["eta_dec2"]))
    np.testing.assert_allclose(val, ref, rtol=1e-13)
    h = 1e-6
    for i in (0, theta.size - 1):  # a weight and log v
        e = np.zeros_like(theta)
        e[i] = h
        fd = (f.loss(theta + e) - f.loss(theta - e)) / (2 * h)
        np.testing.assert_allclose(g[i], fd, rtol=1e-6, atol=1e-8)
    back = f.pack(U=p["U"], W=p["W"], b_e=p["b_e"], b_d=p["b_d"], sigma2=p["sigma2"],
                  eta_dec2=p["eta_dec2"])
    np.testing.assert_allclose(back, theta, rtol=1e-14)


def test_rank_deficient_cross_covariance():
    # y depends on one input direction only: zeta = (z, ~1e-17, ~1e-17), r = 0. The rounding
    # modes get threshold 0, and below beta_1* = d2 the NLL is unbounded (mode 1 explains y).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = x[:, :1] @ rng.normal(size=(1, 3))
    spec = spectrum(Moments.from_arrays(x, y))
    assert spec.zeta[1] < 1e-12 * spec.zeta[0]
    np.testing.assert_allclose(thresholds(spec, eta_dec="learn"), [3.0, 0.0, 0.0], rtol=1e-12)
    with pytest.raises(ValueError, match=r"unbounded below at beta=2\.9: the top 1 mode"):
        optimum(spec, latent_dim=3, beta=2.9, eta_dec="learn")
    o = optimum(spec, latent_dim=3, beta=3.5, eta_dec="learn")
    assert o.n_active == 0
    np.testing.assert_allclose(o.eta_dec2, spec.s_yy / 3, rtol=1e-12)  # v_0 = S / d2
    # Sigma at the prior stays bounded: sqrt(v) >= sqrt(beta) zeta_1 / d2.
    o = optimum(spec, latent_dim=3, beta=1.0, sigma="prior", eta_dec="learn")
    assert o.n_active == 1 and o.eta_dec2 >= spec.zeta[0] ** 2 / 9 * (1 - 1e-12)
