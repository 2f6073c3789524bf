"""gap_to_optimum and compare_active_modes against the closed form."""

from __future__ import annotations

import numpy as np
import pytest

from postcollapse import theory
from postcollapse.diagnostics import compare_active_modes, gap_to_optimum


def _data(n=800, seed=2):
    rng = np.random.default_rng(seed)
    var = np.array([4.0, 2.0, 0.5])
    return rng.standard_normal((n, 3)) * np.sqrt(var) + 2.0


def _params(opt):
    return dict(U=opt.U, W=opt.W, sigma2=opt.sigma2, b_e=opt.b_e, b_d=opt.b_d)


@pytest.mark.parametrize("sigma", ["learnable", "prior"])
def test_gap_is_zero_at_the_optimum_and_positive_off_it(sigma):
    x = _data()
    m = theory.Moments.from_arrays(x)
    spec = theory.spectrum(m)
    opt = theory.optimum(spec, latent_dim=2, beta=1.0, sigma=sigma)
    g = gap_to_optimum(x, beta=1.0, latent_dim=2, params=_params(opt), sigma=sigma)
    assert g.gap == pytest.approx(0.0, abs=1e-10)
    assert g.min_loss == pytest.approx(opt.loss, rel=1e-12)
    p = _params(opt)
    p["U"] = p["U"] * 1.1
    g2 = gap_to_optimum(m, beta=1.0, latent_dim=2, params=p, sigma=sigma)
    expected = theory.vae_loss(m, **p, beta=1.0) - opt.loss
    assert g2.gap == pytest.approx(expected, rel=1e-10) and g2.gap > 1e-4
    assert g2.relative_gap == pytest.approx(g2.gap / abs(opt.loss), rel=1e-12)


def test_gap_vectorised_over_betas_from_losses():
    x = _data()
    spec = theory.spectrum(theory.Moments.from_arrays(x))
    betas = np.array([0.3, 1.0, 3.0, 6.0])
    lo = theory.min_loss(spec, betas, latent_dim=2)
    g = gap_to_optimum(spec, beta=betas, latent_dim=2, loss=lo + np.array([0, 1e-3, 0, 2e-3]))
    np.testing.assert_allclose(g.gap, [0, 1e-3, 0, 2e-3], atol=1e-12)


def test_gap_errors():
    x = _data()
    with pytest.raises(ValueError, match=r"exactly one of loss="):
        gap_to_optimum(x, beta=1.0, latent_dim=2)
    with pytest.raises(ValueError, match=r"one loss per beta"):
        gap_to_optimum(x, beta=[1.0, 2.0], latent_dim=2, loss=[1.0])
    with pytest.raises(ValueError, match=r"params lacks sigma2, b_e"):
        gap_to_optimum(x, beta=1.0, latent_dim=2, params={"U": 0, "W": 0, "b_d": 0})


def test_compare_active_modes_inputs():
    x = _data()
    spec = theory.spectrum(theory.Moments.from_arrays(x))
    thr = theory.thresholds(spec)
    b = float(np.sqrt(thr[0] * thr[1]))  # one mode survives
    c = compare_active_modes(1, x, b)
    assert c.agree and c.predicted == 1 and c.margin == pytest.approx(
        0.5 * np.log(thr[0] / thr[1]))
    c = compare_active_modes(np.array([True, True, False]), spec, b)
    assert not c.agree and c.measured == 2
    with pytest.raises(TypeError, match=r"measured must be an int"):
        compare_active_modes(1.5, x, b)


def test_every_data_form_gives_the_same_gap():
    # A conditional model: the (x, y) tuple, its Moments and its Dataset are one data set,
    # with a measured loss (Spectrum path) as well as with parameters (Moments path).
    from postcollapse.data import Dataset

    x = _data()
    y = x @ np.array([[1.0, 0.5], [0.0, -1.0], [2.0, 0.0]])
    m = theory.Moments.from_arrays(x, y)
    opt = theory.optimum(theory.spectrum(m), latent_dim=2, beta=0.7)
    p = {**_params(opt), "U": opt.U * 0.9}
    ref = gap_to_optimum(m, beta=0.7, latent_dim=2, params=p)
    assert ref.gap > 1e-4
    for data in ((x, y), Dataset("d", x, y)):
        g = gap_to_optimum(data, beta=0.7, latent_dim=2, params=p)
        assert g.gap == pytest.approx(ref.gap, rel=1e-9)
        g = gap_to_optimum(data, beta=0.7, latent_dim=2, loss=ref.loss)
        assert g.gap == pytest.approx(ref.gap, rel=1e-9)
