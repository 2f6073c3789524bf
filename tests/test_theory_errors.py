"""Bad inputs to the theory API raise ValueError/TypeError with a message naming the input."""

from __future__ import annotations

import numpy as np
import pytest

from postcollapse.theory import (
    FlatVAELoss,
    Moments,
    active_modes,
    beta_interval,
    min_loss,
    optimum,
    origin_hessian,
    origin_hessian_min_eig,
    spectrum,
    thresholds,
    vae_loss,
    vae_loss_and_grad,
)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    m = Moments.from_arrays(x)
    spec = spectrum(m)
    params = {"U": np.zeros((3, 2)), "W": np.zeros((3, 2)), "sigma2": np.ones(2),
              "b_e": np.zeros(2), "b_d": np.zeros(3)}
    return x, m, spec, params


@pytest.mark.parametrize("beta", [0.0, -1.0, np.nan, np.inf])
def test_bad_beta(setup, beta):
    x, m, spec, params = setup
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        optimum(spec, latent_dim=2, beta=beta)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        active_modes(spec, beta)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        vae_loss(m, **params, beta=beta)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        vae_loss_and_grad((x, None), **params, beta=beta)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        FlatVAELoss.build(m, latent_dim=2, beta=beta)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        origin_hessian_min_eig(1.0, sigma2=1.0, beta=beta)
    with pytest.raises(ValueError, match="every beta must be a finite number > 0"):
        min_loss(spec, [1.0, beta], latent_dim=2)


@pytest.mark.parametrize("which", ["eta_enc", "eta_dec"])
@pytest.mark.parametrize("value", [0.0, -2.0])
def test_bad_eta(setup, which, value):
    x, m, spec, params = setup
    kw = {which: value}
    msg = f"{which} must be a finite number > 0"
    with pytest.raises(ValueError, match=msg):
        optimum(spec, latent_dim=2, beta=1.0, **kw)
    with pytest.raises(ValueError, match=msg):
        min_loss(spec, [1.0], latent_dim=2, **kw)
    with pytest.raises(ValueError, match=msg):
        vae_loss(m, **params, beta=1.0, **kw)
    with pytest.raises(ValueError, match=msg):
        origin_hessian(np.eye(2), sigma2=1.0, beta=1.0, **kw)
    if which == "eta_dec":
        with pytest.raises(ValueError, match=msg):
            thresholds(spec, eta_dec=value)
        with pytest.raises(ValueError, match=msg):
            beta_interval(spec, 1, eta_dec=value)


def test_bad_latent_dim(setup):
    _, m, spec, _ = setup
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        optimum(spec, latent_dim=0, beta=1.0)
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        min_loss(spec, [1.0], latent_dim=0)
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        active_modes(spec, 1.0, latent_dim=0)
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        FlatVAELoss.build(m, latent_dim=0, beta=1.0)
    with pytest.raises(TypeError, match="latent_dim must be an integer"):
        optimum(spec, latent_dim=1.5, beta=1.0)


def test_nan_and_inf_in_data():
    x = np.ones((10, 3))
    x[:, 1] = np.arange(10.0)
    x[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"x holds 1 NaN .*row 7, column 2"):
        Moments.from_arrays(x)
    # The row is reported in the whole array, not in the chunk.
    with pytest.raises(ValueError, match=r"row 7, column 2"):
        Moments.from_arrays(x, chunk_size=3)
    x[7, 2] = np.inf
    with pytest.raises(ValueError, match=r"inf"):
        Moments.from_arrays(x)
    y = np.zeros((10, 2))
    y[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"y.* holds 1 NaN"):
        Moments.from_arrays(np.arange(20.0).reshape(10, 2), y)
    with pytest.raises(ValueError, match=r"x holds 2 NaN"):
        vae_loss((np.where(np.eye(4, 2) > 0, np.nan, 1.0), None), U=np.zeros((2, 1)),
                 W=np.zeros((2, 1)), sigma2=1.0, b_e=np.zeros(1), b_d=np.zeros(2), beta=1.0)


def test_mismatched_rows_and_shapes(setup):
    x, m, spec, params = setup
    with pytest.raises(ValueError, match="same number of rows"):
        Moments.from_arrays(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="same number of rows"):
        vae_loss((np.zeros((5, 3)), np.zeros((4, 3))), **params, beta=1.0)
    with pytest.raises(ValueError, match="expected 3"):
        m.update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"U must have shape \(d2=3, d1\)"):
        vae_loss(m, **{**params, "U": np.zeros((2, 2))}, beta=1.0)
    with pytest.raises(ValueError, match=r"W must have shape \(d0=3, d1=2\)"):
        vae_loss(m, **{**params, "W": np.zeros((3, 1))}, beta=1.0)
    with pytest.raises(ValueError, match="sigma2 must be > 0"):
        vae_loss(m, **{**params, "sigma2": np.array([1.0, 0.0])}, beta=1.0)
    with pytest.raises(ValueError, match="sigma as fixed variances must have length"):
        optimum(spec, latent_dim=2, beta=1.0, sigma=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sigma must be one of"):
        optimum(spec, latent_dim=2, beta=1.0, sigma="bogus")
    with pytest.raises(TypeError, match="Moments"):
        vae_loss([1, 2, 3], **params, beta=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        spectrum(Moments.from_arrays(np.zeros((1, 3))))
    with pytest.raises(ValueError, match="zeta must hold finite values >= 0"):
        thresholds([1.0, -1.0])
    with pytest.raises(ValueError, match="k=4 exceeds"):
        beta_interval(spec, 4)
