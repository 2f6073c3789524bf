"""Acceptance: the linear VAE trained with the exact loss lands on the closed-form optimum.

30-point beta grids from 0.1 x beta_K* to 2 x beta_1*, sigma learnable and prior, on the
synthetic regression data (d0 = d2 = 5) and on the MNIST subset (plain VAE, latent 5).
"""

import numpy as np
import pytest

from postcollapse.data import load
from postcollapse.theory import optimum, spectrum
from postcollapse.train import sweep


def _grid(spec, latent_dim):
    z2 = spec.zeta[:latent_dim] ** 2
    return np.geomspace(0.1 * z2[-1], 2.0 * z2[0], 30)


def _check(res, spec, betas, sigma, latent_dim, *, sigma_rtol=0.02):
    mode = "prior" if sigma == "prior" else "learnable"
    loss = res.column("loss")
    theory = np.asarray(res.theory["min_loss"])
    np.testing.assert_allclose(loss, theory, rtol=1e-3)
    z2 = spec.zeta_padded(latent_dim) ** 2
    for row, b in zip(res.rows, betas, strict=True):
        opt = optimum(spec, latent_dim=latent_dim, beta=b, sigma=mode)
        sig = np.array([row[f"sigma_{j + 1}"] for j in range(latent_dim)])
        np.testing.assert_allclose(sig, np.sort(np.sqrt(opt.sigma2))[::-1], rtol=sigma_rtol)
        # Active units (Var_x mu_j > 0.01) away from the thresholds: the optimum has
        # Var(mu_j) = theta_j^2, which crosses 0.01 just above each threshold.
        if np.all(np.abs(opt.theta**2 - 0.01) > 0.005) and np.all(np.abs(z2 / b - 1) > 0.05):
            assert row["active_modes"] == row["theory_active"] == int(np.sum(opt.theta**2 > 0.01))
            if mode == "learnable":  # Sigma pins the rotation: coordinates are the modes
                assert row["active_units"] == row["theory_active"]


@pytest.mark.slow
@pytest.mark.parametrize("loss_path", ["moments", "data"])
@pytest.mark.parametrize("sigma", ["learnable", "prior"])
def test_linear_synthetic_reaches_closed_form(sigma, loss_path):
    data = load("synthetic")
    spec = spectrum(data.moments())
    betas = _grid(spec, 5)
    res = sweep(data, betas=betas, sigma=sigma, optimizer="lbfgs", dtype="float64",
                steps=2000, loss_path=loss_path)
    assert res.column("converged").all()
    _check(res, spec, betas, sigma, 5)


@pytest.mark.slow
@pytest.mark.parametrize("sigma", ["learnable", "prior"])
def test_linear_mnist_reaches_closed_form(sigma):
    data = load("mnist")
    spec = spectrum(data.moments())
    betas = _grid(spec, 5)
    # The float64 default tolerance (1e-12 relative decrease, 3 steps in a row). A looser
    # 1e-9 stopped one member (beta = 1.18, modes 4 and 5 still mixed) on a plateau with
    # a 5e-5 loss gap and sigma 3% off: measured, not hypothetical.
    # The default block scaling of L-BFGS (whitened inputs floored at 1e-2 of the largest).
    res = sweep(data, betas=betas, sigma=sigma, optimizer="lbfgs", dtype="float64",
                steps=4000)
    assert res.config["block_scaling"]
    assert res.config["loss_path"] == "moments"
    assert res.column("converged").all()
    _check(res, spec, betas, sigma, 5)


@pytest.mark.slow
def test_linear_mnist_data_path_agrees_with_moments_path():
    """The row-by-row exact loss trains to the same optimum (1,000 rows, 3 betas)."""
    x = load("mnist").x[:1000]
    from postcollapse.theory import Moments

    spec = spectrum(Moments.from_arrays(x))
    z2 = spec.zeta[:5] ** 2
    betas = [0.5 * z2[4], 0.5 * (z2[1] + z2[2]), 1.5 * z2[0]]
    res = sweep((x, None), betas=betas, sigma="learnable", optimizer="lbfgs",
                dtype="float64", steps=3000, tol=1e-7, loss_path="data")
    assert res.config["loss_path"] == "data"
    np.testing.assert_allclose(res.column("loss"), res.theory["min_loss"], rtol=1e-3)


@pytest.mark.parametrize("frac", [0.995, 0.9995])
def test_active_threshold_sets_where_the_count_drops(frac):
    """At the linear optimum Var_x(mu_1) = 1 - beta / beta_1*: at beta = frac * beta_1* the
    unit is active exactly when 1 - frac exceeds the rule's threshold."""
    data = load("synthetic")
    b1 = float(spectrum(data.moments()).zeta[0] ** 2)
    rows = {t: sweep(data, betas=[frac * b1], seeds=[0], active_threshold=t).rows[0]
            for t in (1e-2, 1e-3, 1e-4)}
    for t, row in rows.items():
        assert row["converged"]
        assert row["active_units"] == int(1 - frac > t), (t, row["active_units"])
        assert row["active_modes"] == row["active_units"]
    with pytest.raises(ValueError, match="active_threshold must be"):
        sweep(data, betas=[1.0], active_threshold=0.0)
