"""Numerical stress of the theory engine: ill-scaled, degenerate and extreme inputs.

Every case either gives finite results that agree with a high-precision (mpmath) reference
or with an exact identity, or is refused with a one-line ``ValueError``.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import strategies as st

from fuzzing import fast_and_slow
from postcollapse.theory import (
    Moments,
    freebits_loss,
    freebits_optimum,
    hierarchical_loss,
    hierarchical_optimum,
    optimum,
    spectrum,
    thresholds,
    vae_loss,
    vae_nll,
)


def _base(n=300, d=4, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ np.diag(np.linspace(3.0, 0.5, d))


def _mp_matrix(a):
    return mp.matrix([[mp.mpf(float(v)) for v in row] for row in np.atleast_2d(a)])


def _mp_cov(P, Q):
    """1/n sum (p - mean p)(q - mean q)^T in mpmath (the theory's normalisation)."""
    n = P.rows
    mp_ = [mp.fsum(P[i, a] for i in range(n)) / n for a in range(P.cols)]
    mq = [mp.fsum(Q[i, b] for i in range(n)) / n for b in range(Q.cols)]
    C = mp.matrix(P.cols, Q.cols)
    for a in range(P.cols):
        for b in range(Q.cols):
            C[a, b] = mp.fsum((P[i, a] - mp_[a]) * (Q[i, b] - mq[b]) for i in range(n)) / n
    return C


def ref_zeta(x, y=None, *, dps=40):
    """Singular values of Z = Cov(y,x) Cov(x)^{+1/2} in mpmath (descending, all of them)."""
    with mp.workdps(dps):
        X = _mp_matrix(x)
        A = _mp_cov(X, X)
        if y is None:
            E = mp.eigsy(A, eigvals_only=True)
            vals = [mp.sqrt(max(e, 0)) for e in E]
        else:
            Y = _mp_matrix(y)
            C = _mp_cov(Y, X)
            E, Q = mp.eigsy(A)
            top = max(abs(e) for e in E)
            inv_sqrt = mp.matrix(A.rows, A.cols)
            for k in range(A.rows):
                if E[k] > top * mp.mpf(10) ** (-20):
                    q = Q[:, k]
                    inv_sqrt += (q * q.T) / mp.sqrt(E[k])
            vals = list(mp.svd_r(C * inv_sqrt, compute_uv=False))
        return np.sort(np.array([float(v) for v in vals]))[::-1]


def _check_zeta(spec, ref, *, rtol):
    z = spec.zeta
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z, ref[: z.size], rtol=rtol, atol=rtol * ref[0])
    # modes the tool dropped are negligible against the largest
    assert np.all(ref[z.size:] <= 1e-6 * ref[0])


# ---------------------------------------------------------------- data far from zero


@pytest.mark.parametrize(
    ("offset", "scale", "dtype"),
    [(0.0, 1.0, np.float64), (1e6, 1e-3, np.float64), (1e8, 1e-3, np.float64),
     (-1e6, 1e3, np.float64), (1e3, 1e-3, np.float32), (1e6, 1.0, np.float32)],
)
def test_far_from_zero_plain_matches_mpmath(offset, scale, dtype):
    x = (offset + scale * _base()).astype(dtype)
    _check_zeta(spectrum(Moments.from_arrays(x)), ref_zeta(x), rtol=1e-9)


def test_far_from_zero_conditional_matches_mpmath():
    rng = np.random.default_rng(2)
    x = 1e6 + 1e-3 * _base(n=120, d=3)
    y = -1e6 + (x - 1e6) @ rng.normal(size=(3, 2)) * 1e3 + 1e-4 * rng.normal(size=(120, 2))
    _check_zeta(spectrum(Moments.from_arrays(x, y)), ref_zeta(x, y), rtol=1e-8)


def test_float32_below_resolution_is_constant_data():
    """1e6 + 1e-3 noise is not representable in float32: the data are constant, d* = 0."""
    x = (1e6 + 1e-3 * _base()).astype(np.float32)
    assert np.all(x == x[0])
    spec = spectrum(Moments.from_arrays(x))
    assert spec.d_star == 0 and spec.rank == 0
    opt = optimum(spec, latent_dim=2, beta=1.0)
    assert opt.n_active == 0 and math.isfinite(opt.loss)
    assert np.all(np.isfinite(opt.U)) and np.all(np.isfinite(opt.W))


def _spectrum_shift_and_scale_invariant(log_off, log_scale, f32, seed):
    """zeta(c (x + o)) = |c| zeta(x) for the stored values (shift exact in float64)."""
    dtype = np.float32 if f32 else np.float64
    x = (10.0**log_off + 10.0**log_scale * _base(n=80, seed=seed)).astype(dtype)
    x64 = x.astype(np.float64)
    shifted = x64 - np.round(x64.mean(axis=0))  # exact (Sterbenz) for these magnitudes
    a = spectrum(Moments.from_arrays(x))
    b = spectrum(Moments.from_arrays(shifted))
    assert a.rank == b.rank
    np.testing.assert_allclose(a.zeta, b.zeta, rtol=1e-9, atol=1e-12 * (b.zeta[:1].sum() or 1))


test_shift_scale_invariant, test_shift_scale_invariant_slow = fast_and_slow(
    fast=30, slow=300, log_off=st.sampled_from([0, 3, 6, 8]), log_scale=st.integers(-3, 3),
    f32=st.booleans(), seed=st.integers(0, 2**16))(_spectrum_shift_and_scale_invariant)


# ---------------------------------------------------------------- shapes and dtypes


def test_more_features_than_samples_matches_mpmath():
    x = np.random.default_rng(3).normal(size=(5, 20)) * 1e3 + 7.0
    spec = spectrum(Moments.from_arrays(x))
    assert spec.rank == 4  # n - 1 centred rows
    _check_zeta(spec, ref_zeta(x), rtol=1e-9)
    opt = optimum(spec, latent_dim=6, beta=0.5)
    assert opt.n_active <= 4 and math.isfinite(opt.loss)
    m = Moments.from_arrays(x)
    got = vae_loss(m, U=opt.U, W=opt.W, sigma2=opt.sigma2, b_e=opt.b_e, b_d=opt.b_d,
                   beta=0.5)
    assert got == pytest.approx(opt.loss, rel=1e-9, abs=1e-9 * abs(m.s_yy))


def test_constant_columns_are_dropped_exactly():
    x = _base(n=200, d=3)
    with_const = np.column_stack([x[:, :1], np.full(200, 3.5), x[:, 1:], np.zeros(200)])
    a, b = spectrum(Moments.from_arrays(x)), spectrum(Moments.from_arrays(with_const))
    assert b.rank == 3 and b.d0 == 5
    np.testing.assert_allclose(b.zeta, a.zeta, rtol=1e-12)
    assert spectrum(Moments.from_arrays(np.ones((10, 3)))).d_star == 0


@pytest.mark.parametrize("dtype", [">f8", ">f4", "<f4", ">i4", "<i8", "u1", ">u2", "?"])
def test_integer_and_big_endian_arrays(dtype):
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 2 if dtype == "?" else 200, size=(64, 3))
    x = raw.astype(dtype)
    ref = Moments.from_arrays(raw.astype(np.float64))
    got = Moments.from_arrays(x)
    np.testing.assert_allclose(got.cov_x, ref.cov_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(spectrum(got).zeta, spectrum(ref).zeta, rtol=1e-12)


# ---------------------------------------------------------------- degenerate modes


def _exact_cov_data(s, n=64, seed=5):
    """Rows whose 1/n covariance is exactly diag(s^2) (up to rounding)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, len(s))) - 0.0)
    q -= q.mean(axis=0)
    q, _ = np.linalg.qr(q)  # orthonormal and centred
    return math.sqrt(n) * q * np.asarray(s)


@pytest.mark.parametrize("gap", [0.0, 1e-12, 1e-9, 1e-6])
@pytest.mark.parametrize("sigma", ["learnable", "prior"])
def test_nearly_equal_zetas_invariants(gap, sigma):
    """U*, W* are not unique in a degenerate block; the loss and U W^T are."""
    m0 = Moments.from_arrays(_exact_cov_data([2.0, 2.0, 1.0]))
    m1 = Moments.from_arrays(_exact_cov_data([2.0, 2.0 + gap, 1.0]))
    o0 = optimum(spectrum(m0), latent_dim=3, beta=0.7, sigma=sigma)
    o1 = optimum(spectrum(m1), latent_dim=3, beta=0.7, sigma=sigma)
    assert o1.loss == pytest.approx(o0.loss, rel=1e-9, abs=10 * gap)
    np.testing.assert_allclose(o1.U @ o1.W.T, o0.U @ o0.W.T, atol=1e-6 + 10 * gap)
    # a rotation inside the degenerate block leaves the loss unchanged
    c, s = math.cos(0.3), math.sin(0.3)
    R = np.eye(3)
    R[:2, :2] = [[c, -s], [s, c]]
    if np.allclose(o0.sigma2[:2], o0.sigma2[0]):
        rot = vae_loss(m0, U=o0.U @ R, W=o0.W @ R, sigma2=o0.sigma2, b_e=o0.b_e @ R,
                       b_d=o0.b_d, beta=0.7)
        assert rot == pytest.approx(o0.loss, rel=1e-12)


# ---------------------------------------------------------------- exactly at a threshold


@pytest.mark.parametrize("eta_dec", [1e-4, 1.0, 1e4])
@pytest.mark.parametrize("i", [0, 1, 2])
def test_beta_exactly_at_threshold(i, eta_dec):
    m = Moments.from_arrays(_exact_cov_data([3.0, 2.0, 1.0]))
    spec = spectrum(m)
    b_star = float(thresholds(spec, eta_dec=eta_dec)[i])
    at = optimum(spec, latent_dim=3, beta=b_star, eta_dec=eta_dec)
    assert at.n_active == i  # mode i collapses iff beta >= beta_i*
    half = optimum(spec, latent_dim=3, beta=b_star / 2, eta_dec=eta_dec)
    size = np.abs(half.U @ half.W.T).max()  # the map's scale away from the threshold
    for f in (1 - 1e-10, 1 + 1e-10):  # the optimum is continuous through beta_i*
        near = optimum(spec, latent_dim=3, beta=b_star * f, eta_dec=eta_dec)
        assert near.loss == pytest.approx(at.loss, rel=1e-8)
        np.testing.assert_allclose(near.U @ near.W.T, at.U @ at.W.T, rtol=0,
                                   atol=1e-8 * size)


# ---------------------------------------------------------------- extreme hyper-parameters

_M = Moments.from_arrays(_base(n=200, d=4, seed=6))
_SPEC = spectrum(_M)


def _optimum_extremes_finite_and_self_consistent(lb, le, ld, sigma, k):
    beta, eta_enc, eta_dec = 10.0**lb, 10.0**le, 10.0**ld
    opt = optimum(_SPEC, latent_dim=k, beta=beta, sigma=sigma, eta_enc=eta_enc,
                  eta_dec=eta_dec)
    for v in (opt.U, opt.W, opt.sigma2, opt.b_e, opt.b_d, opt.lam, opt.theta):
        assert np.all(np.isfinite(v))
    assert math.isfinite(opt.loss) and math.isfinite(opt.nll)
    direct = vae_loss(_M, U=opt.U, W=opt.W, sigma2=opt.sigma2, b_e=opt.b_e, b_d=opt.b_d,
                      beta=beta, eta_enc=eta_enc, eta_dec=eta_dec)
    scale = _M.s_yy / eta_dec**2 + k * beta + abs(opt.loss)
    assert direct == pytest.approx(opt.loss, rel=1e-9, abs=1e-10 * scale)


test_optimum_extremes, test_optimum_extremes_slow = fast_and_slow(
    fast=30, slow=300, lb=st.floats(-8, 8), le=st.floats(-4, 4), ld=st.floats(-4, 4),
    sigma=st.sampled_from(["learnable", "prior"]), k=st.integers(1, 6),
)(_optimum_extremes_finite_and_self_consistent)


def _learned_eta_dec_extremes(lb, le, k, sigma):
    """eta_dec = 'learn': finite and optimal in v, or refused as unbounded."""
    beta, eta_enc = 10.0**lb, 10.0**le
    try:
        opt = optimum(_SPEC, latent_dim=k, beta=beta, sigma=sigma, eta_enc=eta_enc,
                      eta_dec="learn")
    except ValueError as exc:
        assert "unbounded below" in str(exc) and "\n" not in str(exc)
        return
    assert opt.eta_dec_learned and math.isfinite(opt.nll) and opt.eta_dec2 > 0
    kw = dict(U=opt.U, W=opt.W, sigma2=opt.sigma2, b_e=opt.b_e, b_d=opt.b_d, beta=beta,
              eta_enc=eta_enc)
    at = vae_nll(_M, eta_dec=opt.eta_dec, **kw)
    # the direct evaluation cancels s_yy down to the residual: rounding ~ eps s_yy / v
    assert at == pytest.approx(opt.nll, rel=1e-9, abs=1e-12 * _M.s_yy / opt.eta_dec2)
    for f in (0.999, 1.001):  # v is a minimiser for the reported parameters
        assert vae_nll(_M, eta_dec=opt.eta_dec * f, **kw) >= at - 1e-9 * abs(at)


test_learned_eta_dec_extremes, test_learned_eta_dec_extremes_slow = fast_and_slow(
    fast=30, slow=300, lb=st.floats(-8, 8), le=st.floats(-4, 4), k=st.integers(1, 5),
    sigma=st.sampled_from(["learnable", "prior"]))(_learned_eta_dec_extremes)


def test_learned_eta_dec_exact_fit_refused():
    x = _base(n=50, d=3)
    with pytest.raises(ValueError, match="unbounded below"):
        optimum(spectrum(Moments.from_arrays(x)), latent_dim=3, beta=1e-8, eta_dec="learn")


def _hierarchical_extremes(lb, lb2, ld, le, fixed):
    beta, beta2, eta_dec, eta_enc = 10.0**lb, 10.0**lb2, 10.0**ld, 10.0**le
    try:
        opt = hierarchical_optimum(_SPEC, latent_dim=3, latent_dim2=2, beta=beta, beta2=beta2,
                                   eta_enc=eta_enc, eta_dec=eta_dec,
                                   sigma1=0.5 if fixed else None)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert math.isfinite(opt.loss)
    for v in opt.params:
        assert np.all(np.isfinite(v))
    direct = hierarchical_loss(_M, opt.params, beta=beta, beta2=beta2, eta_enc=eta_enc,
                               eta_dec=eta_dec)
    scale = _M.s_yy / eta_dec**2 + 3 * (beta + beta2) + abs(opt.loss)
    assert direct == pytest.approx(opt.loss, rel=1e-8, abs=1e-9 * scale)


test_hierarchical_extremes, test_hierarchical_extremes_slow = fast_and_slow(
    fast=15, slow=150, lb=st.floats(-6, 6), lb2=st.floats(-6, 6), ld=st.floats(-3, 3),
    le=st.floats(-3, 3), fixed=st.booleans())(_hierarchical_extremes)


def _freebits_extremes(lb, lam, ld):
    beta, eta_dec = 10.0**lb, 10.0**ld
    try:
        opt = freebits_optimum(_SPEC, latent_dim=3, beta=beta, lam=lam, eta_dec=eta_dec,
                               n_starts=2)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert math.isfinite(opt.loss)
    direct = freebits_loss(_M, U=opt.U, W=opt.W, sigma2=opt.sigma2, b_e=opt.b_e, b_d=opt.b_d,
                           beta=beta, lam=lam, eta_dec=eta_dec)
    scale = _M.s_yy / eta_dec**2 + 3 * beta * (1 + lam) + abs(opt.loss)
    assert direct == pytest.approx(opt.loss, rel=1e-6, abs=1e-7 * scale)



test_freebits_extremes, test_freebits_extremes_slow = fast_and_slow(
    fast=10, slow=100, lb=st.floats(-4, 4), lam=st.floats(0, 5), ld=st.floats(-2, 2),
)(_freebits_extremes)



def test_free_bits_beyond_float64_refused():
    from postcollapse.theory.freebits import MAX_FREE_BITS

    opt = freebits_optimum(_SPEC, latent_dim=2, beta=1.0, lam=MAX_FREE_BITS, n_starts=1)
    assert math.isfinite(opt.loss) and np.all(np.isfinite(opt.U))
    with pytest.raises(ValueError, match=r"lambda = 1e\+08 nats per latent is out of range"):
        freebits_optimum(_SPEC, latent_dim=2, beta=1.0, lam=1e8)
