"""K-member batched VAEs: shapes, initialisation, and the three L_VAE estimators."""

import numpy as np
import pytest
import torch

from postcollapse.models import (
    BatchedVAE,
    evaluate_loss,
    exact_loss,
    moment_tensors,
    moments_loss,
    sampled_loss,
)
from postcollapse.theory import Moments, vae_loss


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5)) + 3.0
    y = x @ rng.normal(size=(5, 4)) + rng.normal(size=(400, 4)) - 1.0
    return x, y


def _random_model(sigma, *, encoder="linear", decoder="linear", k=3, seed=0):
    m = BatchedVAE(5, 4, latent_dim=3, betas=np.linspace(0.5, 2.0, k), seeds=list(range(k)),
                   sigma=sigma, encoder=encoder, decoder=decoder, hidden=6,
                   eta_enc=1.3, eta_dec=0.7, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.flat.copy_(0.5 * torch.randn(m.flat.shape, generator=g, dtype=torch.float64))
    return m


@pytest.mark.parametrize("sigma", ["prior", "learnable"])
def test_exact_and_moments_loss_equal_theory_vae_loss(xy, sigma):
    x, y = xy
    m = _random_model(sigma)
    X, Y = torch.tensor(x), torch.tensor(y)
    ex = exact_loss(m, X, Y)
    mo = moments_loss(m, moment_tensors(Moments.from_arrays(x, y)))
    np.testing.assert_allclose(ex.loss.detach(), mo.loss.detach(), rtol=1e-12)
    np.testing.assert_allclose(ex.kl_dims.detach(), mo.kl_dims.detach(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose((ex.rec + m.beta * ex.kl).detach(), ex.loss.detach(), rtol=1e-14)
    f = m.linear_factors()
    for k in range(m.n_members):
        ref = vae_loss((x, y), U=f["U"][k], W=f["W"][k], sigma2=f["sigma2"][k], b_e=f["b_e"][k],
                       b_d=f["b_d"][k], beta=float(m.beta[k]), eta_enc=1.3, eta_dec=0.7)
        np.testing.assert_allclose(float(ex.loss[k].detach()), ref, rtol=1e-10)


def test_exact_loss_is_the_mean_of_sampled_losses(xy):
    x, y = xy
    m = _random_model("linear", encoder="tanh")  # x-dependent Sigma, linear decoder
    X, Y = torch.tensor(x), torch.tensor(y)
    ex = exact_loss(m, X, Y).loss.detach()
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([sampled_loss(m, X, Y, eps=torch.randn(3, 400, 3, generator=g,
                                                                dtype=torch.float64)).loss.detach()
                         for _ in range(400)])
    se = draws.std(0) / np.sqrt(400)
    assert torch.all((draws.mean(0) - ex).abs() < 5 * se)


def test_evaluate_loss_exact_path_matches_exact_loss_in_chunks(xy):
    x, y = xy
    m = _random_model("learnable")
    X, Y = torch.tensor(x), torch.tensor(y)
    ev = evaluate_loss(m, X, Y, chunk_size=37)
    np.testing.assert_allclose(ev.loss, exact_loss(m, X, Y).loss.detach(), rtol=1e-12)


def test_evaluate_loss_sampled_path_is_reproducible(xy):
    x, y = xy
    m = _random_model("mlp", encoder="relu", decoder="relu")
    X, Y = torch.tensor(x), torch.tensor(y)
    a = evaluate_loss(m, X, Y, n_eps=8, generator=torch.Generator().manual_seed(3))
    b = evaluate_loss(m, X, Y, n_eps=8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.loss, b.loss) and torch.isfinite(a.loss).all()


@pytest.mark.parametrize("arch", ["linear", "relu", "tanh"])
@pytest.mark.parametrize("sigma", ["prior", "learnable", "linear", "mlp"])
def test_encode_decode_shapes(arch, sigma):
    m = BatchedVAE(6, 4, latent_dim=3, betas=[1.0, 2.0], encoder=arch, decoder=arch,
                   sigma=sigma, hidden=5)
    x = torch.randn(7, 6)
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (2, 7, 3)
    mu2, _ = m.encode(x.expand(2, 7, 6))
    torch.testing.assert_close(mu, mu2)
    assert m.decode(mu).shape == (2, 7, 4)
    if sigma == "prior":
        assert torch.all(logvar == 0)


def test_initialisation_depends_only_on_the_member_seed():
    a = BatchedVAE(5, 5, latent_dim=2, betas=[1.0, 3.0, 9.0], seeds=[4, 7, 4], sigma="linear",
                   encoder="relu", decoder="relu")
    b = BatchedVAE(5, 5, latent_dim=2, betas=[0.2], seeds=[7], sigma="linear",
                   encoder="relu", decoder="relu")
    assert torch.equal(a.flat[1], b.flat[0])
    assert torch.equal(a.flat[0], a.flat[2])
    assert not torch.equal(a.flat[0], a.flat[1])


def test_select_and_config_round_trip():
    m = _random_model("learnable", k=4)
    sub = m.select([2, 0])
    torch.testing.assert_close(sub.flat, m.flat[[2, 0]])
    assert sub.beta.tolist() == [m.beta[2].item(), m.beta[0].item()]
    again = BatchedVAE.from_config(m.config())
    assert again.config() == m.config()


def test_members_are_independent():
    """The gradient of the summed loss w.r.t. member k is member k's own gradient."""
    m = _random_model("linear", encoder="relu", decoder="relu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, dtype=torch.float64, generator=g)
    y = torch.randn(20, 4, dtype=torch.float64, generator=g)
    eps = torch.randn(3, 20, 3, dtype=torch.float64, generator=g)
    (g_all,) = torch.autograd.grad(sampled_loss(m, x, y, eps=eps).loss.sum(), m.flat)
    single = m.select([1])
    (g_one,) = torch.autograd.grad(sampled_loss(single, x, y, eps=eps[1:2]).loss.sum(),
                                   single.flat)
    torch.testing.assert_close(g_all[1], g_one[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sigma": "diag"}, "sigma must be one of"), ({"encoder": "gelu"}, "encoder must be one of"),
     ({"betas": [1.0, -1.0]}, r"betas must be finite numbers > 0; betas\[1\] is -1"),
     ({"seeds": [0]}, "seeds must have one entry per member"),
     ({"eta_dec": 0.0}, "eta_dec must be finite and > 0")],
)
def test_bad_arguments(kwargs, match):
    args = {"latent_dim": 2, "betas": [1.0, 2.0], **kwargs}
    with pytest.raises(ValueError, match=match):
        BatchedVAE(3, 3, **args)


def test_exact_and_moments_loss_refuse_models_they_cannot_handle():
    m = BatchedVAE(3, 3, latent_dim=2, betas=[1.0], encoder="relu", decoder="relu")
    with pytest.raises(ValueError, match="decoder 'linear'"):
        exact_loss(m, torch.randn(4, 3))
    with pytest.raises(ValueError, match="moments_loss needs linear"):
        moments_loss(m, moment_tensors(np.random.default_rng(0).normal(size=(9, 3))))
