"""Free bits: the reduced-problem optimum against direct optimisation of the exact loss."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from postcollapse.theory import Moments, optimum, spectrum
from postcollapse.theory.freebits import (
    FlatFreeBitsLoss,
    equal_diagonal_rotation,
    freebits_kl,
    freebits_loss,
    freebits_optimum,
    freebits_reduced_loss,
)
from problems import get_problem


def _problem(seed, *, d0, conditional):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d0, d0)))
    x = (rng.normal(size=(200, d0)) * np.linspace(2.0, 0.4, d0)) @ q.T + 5.0
    if not conditional:
        return Moments.from_arrays(x)
    M = rng.normal(size=(3, d0))
    return Moments.from_arrays(x, x @ M.T + 0.3 * np.tanh(x[:, :3]) - 4.0)


def _direct(m, *, latent_dim, beta, lam, eta_enc, eta_dec, seed=0, n_starts=4):
    """SLSQP on the epigraph of the max(): min recon + beta sum(lam + t_j),
    t_j >= KL_j - lam, t_j >= 0 (exact, with exact gradients)."""
    f = FlatFreeBitsLoss.build(m, latent_dim=latent_dim, beta=beta, lam=lam, eta_enc=eta_enc,
                               eta_dec=eta_dec)
    S, d1 = f.size, latent_dim
    rng = np.random.default_rng(seed)

    def obj(z):
        r, g, _, _ = f.parts(z[:S])
        return r + beta * np.sum(lam + z[S:]), np.concatenate([g, np.full(d1, beta)])

    cons = {"type": "ineq", "fun": lambda z: z[S:] - (f.parts(z[:S])[2] - lam),
            "jac": lambda z: np.hstack([-f.parts(z[:S])[3], np.eye(d1)])}
    best = np.inf
    for _ in range(n_starts):
        th = f.init(rng)
        z0 = np.concatenate([th, np.maximum(f.parts(th)[2] - lam, 0.0) + 0.1])
        res = minimize(obj, z0, jac=True, method="SLSQP", constraints=[cons],
                       bounds=[(None, None)] * S + [(0.0, None)] * d1,
                       options={"maxiter": 5000, "ftol": 1e-16})
        best = min(best, f.loss(res.x[:S]))
    return best


# (problem, d1, beta, lam, eta_enc, eta_dec) -> expected regime
REGIME_CASES = [
    (("plain", 3, 1.0, 0.1, 1.0, 1.0), "aligned"),
    (("plain", 3, 2.0, 0.5, 0.8, 0.8), "all pinned"),
    (("conditional_d0_gt_d2", 2, 1.0, 0.1, 1.0, 1.0), "mixed"),
]


def _regime_data(name):
    """A registry problem moved far from zero (the theory is shift invariant)."""
    x, y = get_problem(name).data()
    return Moments.from_arrays(x + 5.0, None if y is None else y - 3.0)


@pytest.mark.parametrize(("case", "regime"), REGIME_CASES)
def test_three_regimes_match_direct_optimisation(case, regime):
    name, d1, beta, lam, ee, ed = case
    m = _regime_data(name)
    fb = freebits_optimum(spectrum(m), latent_dim=d1, beta=beta, lam=lam, eta_enc=ee,
                          eta_dec=ed)
    assert fb.regime == regime
    direct = _direct(m, latent_dim=d1, beta=beta, lam=lam, eta_enc=ee, eta_dec=ed,
                     n_starts=2)
    assert direct == pytest.approx(fb.loss, rel=1e-8)
    # The returned parameters attain the value on the full model.
    val = freebits_loss(m, U=fb.U, W=fb.W, sigma2=fb.sigma2, b_e=fb.b_e, b_d=fb.b_d,
                        beta=beta, lam=lam, eta_enc=ee, eta_dec=ed)
    assert val == pytest.approx(fb.loss, rel=1e-12)
    kl = freebits_kl(m, W=fb.W, sigma2=fb.sigma2, b_e=fb.b_e, eta_enc=ee)
    np.testing.assert_allclose(kl, fb.kl, rtol=1e-9, atol=1e-12)
    # Every latent carries at least lam nats ...
    assert np.all(fb.kl >= lam - 1e-9)
    if regime == "all pinned":
        np.testing.assert_allclose(fb.kl, lam, atol=1e-8)
        assert fb.loss == pytest.approx(fb.waterfilling_loss, rel=1e-10)
    if regime == "aligned":
        assert fb.loss == pytest.approx(fb.aligned_loss, rel=1e-10)
    if regime == "mixed":
        # ... yet a mode with signal in the data receives none: KL is no diagnostic here.
        assert fb.loss < min(fb.aligned_loss, fb.waterfilling_loss) - 1e-4
        assert np.any((fb.snr < 1e-8) & (spectrum(m).zeta > 0))


settings_kw = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
cases = st.tuples(
    st.integers(0, 10**6), st.integers(3, 4), st.booleans(), st.integers(1, 5),
    st.sampled_from([0.5, 1.0, 2.0, 4.0]), st.sampled_from([0.05, 0.1, 0.5, 1.0]),
    st.sampled_from([(1.0, 1.0), (0.8, 1.2), (1.3, 0.8)]),
)


def _check(case, n_starts):
    seed, d0, cond, d1, beta, lam, (ee, ed) = case
    m = _problem(seed, d0=d0, conditional=cond)
    fb = freebits_optimum(spectrum(m), latent_dim=d1, beta=beta, lam=lam, eta_enc=ee,
                          eta_dec=ed)
    direct = _direct(m, latent_dim=d1, beta=beta, lam=lam, eta_enc=ee, eta_dec=ed,
                     n_starts=n_starts)
    assert direct == pytest.approx(fb.loss, rel=1e-8)
    return fb


@pytest.mark.slow
@settings(max_examples=12, **settings_kw)
@given(cases)
def test_matches_direct_optimisation_random(case):
    _check(case, n_starts=4)


@settings(max_examples=15, **settings_kw)
@given(cases)
def test_closed_forms_are_upper_bounds_and_parameters_attain_the_loss(case):
    seed, d0, cond, d1, beta, lam, (ee, ed) = case
    m = _problem(seed, d0=d0, conditional=cond)
    spec = spectrum(m)
    fb = freebits_optimum(spec, latent_dim=d1, beta=beta, lam=lam, eta_enc=ee, eta_dec=ed,
                          n_starts=1)
    assert fb.loss <= min(fb.aligned_loss, fb.waterfilling_loss) + 1e-12
    assert fb.regime in ("aligned", "all pinned", "mixed")
    red = freebits_reduced_loss(fb.N, spec.zeta, residual=spec.residual, beta=beta, lam=lam,
                                eta_dec=ed)
    assert red == pytest.approx(fb.loss, rel=1e-13)
    val = freebits_loss(m, U=fb.U, W=fb.W, sigma2=fb.sigma2, b_e=fb.b_e, b_d=fb.b_d,
                        beta=beta, lam=lam, eta_enc=ee, eta_dec=ed)
    assert val == pytest.approx(fb.loss, rel=1e-11)
    assert np.all(fb.snr >= -1e-12)


@pytest.mark.parametrize("d1", [1, 2, 4])
def test_zero_free_bits_is_the_beta_vae(d1):
    m = _problem(2, d0=4, conditional=True)
    spec = spectrum(m)
    fb = freebits_optimum(spec, latent_dim=d1, beta=0.7, lam=0.0, eta_enc=1.2, eta_dec=0.9)
    ref = optimum(spec, latent_dim=d1, beta=0.7, eta_enc=1.2, eta_dec=0.9).loss
    assert fb.loss == pytest.approx(ref, rel=1e-10)
    assert fb.regime == "aligned"


@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=7))
def test_equal_diagonal_rotation(p):
    q = equal_diagonal_rotation(p)
    np.testing.assert_allclose(q @ q.T, np.eye(len(p)), atol=1e-12)
    h = q @ np.diag(p) @ q.T
    np.testing.assert_allclose(np.diag(h), np.mean(p), atol=1e-10 * (1 + max(p)))


def test_bad_inputs():
    spec = spectrum(_problem(0, d0=3, conditional=False))
    with pytest.raises(ValueError, match="free bits lambda must be a finite number >= 0"):
        freebits_optimum(spec, latent_dim=2, beta=1.0, lam=-0.1)
    with pytest.raises(ValueError, match="beta must be"):
        freebits_optimum(spec, latent_dim=2, beta=0.0, lam=0.1)
    with pytest.raises(TypeError, match="expected a Spectrum"):
        freebits_optimum(None, latent_dim=2, beta=1.0, lam=0.1)
