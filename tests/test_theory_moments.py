"""Moments (streaming, shifted, mergeable) and the spectrum of Z."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postcollapse.theory import Moments, spectrum, thresholds
from problems import PROBLEMS, moments_and_spectrum


def _oneshot(x, y):
    yy = x if y is None else y
    n = x.shape[0]
    full = np.cov(np.hstack([x, yy]).T, bias=True).reshape(x.shape[1] + yy.shape[1], -1)
    d0 = x.shape[1]
    return x.mean(0), yy.mean(0), full[:d0, :d0], full[d0:, :d0], np.trace(full[d0:, d0:]), n


def _assert_moments_equal(m, x, y, rtol=1e-12):
    mx, my, A, C, syy, n = _oneshot(x, y)
    assert m.n_samples == n
    scale = np.abs(A).max()
    np.testing.assert_allclose(m.mean_x, mx, rtol=rtol, atol=rtol * np.abs(mx).max())
    np.testing.assert_allclose(m.mean_y, my, rtol=rtol, atol=rtol * np.abs(my).max())
    np.testing.assert_allclose(m.cov_x, A, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(m.cov_yx, C, rtol=rtol, atol=rtol * np.abs(C).max())
    assert m.s_yy == pytest.approx(syy, rel=rtol)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 60),
    chunk=st.integers(1, 70),
    plain=st.booleans(),
    cuts=st.lists(st.integers(0, 60), max_size=4),
)
def test_chunked_and_merged_equal_oneshot(seed, n, chunk, plain, cuts):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.1] + 100.0
    y = None if plain else rng.normal(size=(n, 2)) + x[:, :2]
    _assert_moments_equal(Moments.from_arrays(x, y, chunk_size=chunk), x, y)
    # Shards (possibly empty) computed apart and merged, in any grouping.
    edges = sorted({0, n, *(min(c, n) for c in cuts)})
    parts = [
        Moments.from_arrays(x[a:b], None if y is None else y[a:b], chunk_size=chunk)
        if b > a else Moments.empty(3, None if plain else 2)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    merged = Moments.empty(3, None if plain else 2)
    for part in reversed(parts):
        merged = part.merge(merged)
    _assert_moments_equal(merged, x, y)
    # update() chunk by chunk gives the same.
    m = Moments.empty(3, None if plain else 2)
    for a in range(0, n, 5):
        m = m.update(x[a:a + 5], None if y is None else y[a:a + 5])
    _assert_moments_equal(m, x, y)


@pytest.mark.parametrize("name", [n for n, p in PROBLEMS.items() if "plain" in p.tags])
def test_plain_zeta_squared_are_pca_variances(name):
    from sklearn.decomposition import PCA

    x, y, _, spec = moments_and_spectrum(PROBLEMS[name])
    assert y is None
    n = x.shape[0]
    pca = PCA().fit(x)
    ev = pca.explained_variance_ * (n - 1) / n  # sklearn: ddof=1; we: population 1/N
    ev = ev[ev > 1e-10 * ev[0]]  # the constant column's zero variance is not a mode
    np.testing.assert_allclose(spec.zeta**2, ev, rtol=1e-10)
    assert spec.residual == pytest.approx(0.0, abs=1e-12 * spec.s_yy)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_registry_known_answers(name):
    p = PROBLEMS[name]
    x, y, m, spec = moments_and_spectrum(p)
    assert spec.rank == p.rank
    assert spec.d_star == p.d_star == min(p.rank, m.d2)
    assert np.all(np.diff(spec.zeta) <= 0)
    if p.residual_zero:
        assert spec.residual <= 1e-12 * spec.s_yy
    else:
        assert spec.residual > 1e-3 * spec.s_yy
    # r = s_yy - ||Z||_F^2 is the least-squares residual of y on x (with intercept).
    yy = x if y is None else y
    X1 = np.column_stack([x, np.ones(len(x))])
    coef, *_ = np.linalg.lstsq(X1, yy, rcond=None)
    r_ls = np.mean(np.sum((X1 @ coef - yy) ** 2, axis=1))
    assert spec.residual == pytest.approx(r_ls, rel=1e-8, abs=1e-12 * spec.s_yy)
    # Z = C A^{-1/2} and ZZ^T = C A^+ C^T.
    Z = m.cov_yx @ spec.a_inv_sqrt
    np.testing.assert_allclose(spec.Z, Z, atol=1e-10 * np.abs(Z).max())
    zz = np.linalg.eigvalsh(m.cov_yx @ np.linalg.pinv(m.cov_x, rtol=1e-10) @ m.cov_yx.T)[::-1]
    np.testing.assert_allclose(spec.zeta**2, zz[: spec.d_star], rtol=1e-8,
                               atol=1e-10 * zz[0])


@pytest.mark.parametrize("name", ["plain", "conditional_d0_gt_d2", "nonlinear_y"])
def test_thresholds_survive_shift_and_float32(name):
    p = PROBLEMS[name]
    x, y, _, spec = moments_and_spectrum(p)
    t_ref = thresholds(spec, eta_dec=p.eta_dec)

    # (a) Shift by 1e4 in float64: rounding of x + 1e4 is ~1e-12 per entry, so the
    #     thresholds (O(0.1..10)) agree to ~1e-10 if the moments are accumulated shifted.
    shift = 1e4
    ys = None if y is None else y + shift
    t64 = thresholds(spectrum(Moments.from_arrays(x + shift, ys, chunk_size=37)),
                     eta_dec=p.eta_dec)
    np.testing.assert_allclose(t64, t_ref, rtol=1e-10)  # measured <= 2e-12

    # (b) float32 and shifted: the *input* is quantised to the float32 grid at 1e4 (spacing
    #     2^-10, so up to 2^-11 = 4.9e-4 per entry). Against the same quantised values held
    #     exactly in float64 (x32 - 1e4 is exact in float64), the library must lose nothing:
    x32 = (x + shift).astype(np.float32)
    y32 = None if y is None else (y + shift).astype(np.float32)
    t32 = thresholds(spectrum(Moments.from_arrays(x32, y32, chunk_size=37)), eta_dec=p.eta_dec)
    xq = x32.astype(np.float64) - shift
    yq = None if y32 is None else y32.astype(np.float64) - shift
    tq = thresholds(spectrum(Moments.from_arrays(xq, yq)), eta_dec=p.eta_dec)
    np.testing.assert_allclose(t32, tq, rtol=1e-10)  # measured <= 4e-13
    # ...and against the unquantised data only as well as the quantisation allows: a
    # perturbation of up to 4.9e-4 per entry of O(1) data moves the thresholds by
    # ~1e-4 relative (measured 3.6e-5 .. 9.5e-5 on these problems). rtol 1e-6 is not
    # attainable from float32 input at 1e4 by any algorithm: the information is gone.
    np.testing.assert_allclose(t32, t_ref, rtol=1e-3)
    # A naive float32 computation (raw sums, mean removed afterwards) loses everything.
    xf = x32[:, :1]
    naive = float(np.mean(xf * xf, dtype=np.float32) - np.mean(xf, dtype=np.float32) ** 2)
    assert abs(naive - x[:, 0].var()) > 1e-2 * x[:, 0].var()


@pytest.mark.parametrize("ratio", [0.0, 5.0, 20.0, 1e4])
@pytest.mark.parametrize("chunk", [50, 4096])
def test_shift_choice_keeps_central_moments_exact(ratio, chunk):
    """Float64 data whose mean is up to 10 standard deviations from zero skip the shift
    pass (rows go to dsyrk as they are); farther data are shifted. Either way the central
    moments match a two-pass float64 reference to ~1e-12 (mean = ratio * std)."""
    from postcollapse.theory.moments import _first_shift

    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 6)) * np.array([1.0, 2.0, 0.5, 3.0, 1.5, 0.1]) + ratio * np.array(
        [1.0, 2.0, 0.5, 3.0, 1.5, 0.1]
    )
    y = x[:, :3] ** 2 - 4 * ratio
    ref_x = x - x.mean(0)
    ref_y = y - y.mean(0)
    m = Moments.from_arrays(x, y, chunk_size=chunk)
    skipped = _first_shift("x", x, min(chunk, 500))[0] is None
    assert skipped == (ratio < 10)  # the first chunk (>= 50 rows) decides
    np.testing.assert_allclose(m.mean_x, x.mean(0), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(m.cov_x, ref_x.T @ ref_x / 500, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(m.cov_yx, ref_y.T @ ref_x / 500, rtol=1e-11, atol=1e-12)
    assert m.s_yy == pytest.approx(float((ref_y**2).sum()) / 500, rel=1e-11)


# ---------------------------------------------------------------------------- as_moments


def test_as_moments_accepts_every_data_form():
    from postcollapse.data import Dataset
    from postcollapse.theory.moments import as_moments

    rng = np.random.default_rng(3)
    x = 50.0 + rng.normal(size=(40, 3))
    y = x @ rng.normal(size=(3, 2))
    m = Moments.from_arrays(x, y)
    assert as_moments(m) is m
    _assert_moments_equal(as_moments((x, y)), x, y)
    for plain in ((x,), (x, None), x, Dataset("d", x)):
        got = as_moments(plain)
        assert got.plain
        _assert_moments_equal(got, x, None)
    _assert_moments_equal(as_moments(Dataset("d", x, y)), x, y)


def test_as_moments_errors():
    from postcollapse.theory.moments import as_moments

    with pytest.raises(ValueError, match=r"\(x, y\) or \(x,\), got a tuple of length 3"):
        as_moments((np.zeros((3, 2)),) * 3)
    with pytest.raises(TypeError, match="Moments, a Dataset, an \\(x, y\\) tuple .* got list"):
        as_moments([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="x has 5 rows but the target y has 4"):
        as_moments((np.zeros((5, 2)), np.zeros((4, 2))))
