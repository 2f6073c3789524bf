"""Named loss conventions: each library's own loss = recon_coef * <SE> + kl_coef * <KL>.

``effective_beta`` reports the coefficients a_R, a_K of the batch-mean summed squared error
and the batch-mean summed KL; reproducing the library's loss value with them on random
tensors checks the conversion beta * eta_dec^2 = a_K / (2 a_R) at its root.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from postcollapse.diagnostics import (
    LOSS_CONVENTIONS,
    BernoulliDecoderError,
    effective_beta,
)


def _tensors(shape=(6, 1, 4, 5), k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    recon = torch.rand(shape, generator=g, dtype=torch.float64)
    mu = torch.randn(shape[0], k, generator=g, dtype=torch.float64)
    log_var = torch.randn(shape[0], k, generator=g, dtype=torch.float64)
    return recon, x, mu, log_var


def _ours(res, recon, x, mu, log_var):
    se = ((recon - x) ** 2).reshape(x.shape[0], -1).sum(-1).mean()
    kl = (-0.5 * (1 + log_var - mu**2 - log_var.exp()).sum(-1)).mean()
    return res.recon_coef * se + res.kl_coef * kl, kl


@pytest.mark.parametrize("name, beta", [("pythae-vae", None), ("pythae-betavae", 3.7),
                                        ("pythae-betavae", None)])
def test_pythae_own_loss_function(name, beta):
    """pythae's VAE / BetaVAE ``loss_function`` (reconstruction_loss='mse') on random tensors."""
    pytest.importorskip("pythae")
    from pythae.models import VAE, BetaVAE, BetaVAEConfig, VAEConfig

    shape = (6, 1, 4, 5)
    if name == "pythae-vae":
        model = VAE(VAEConfig(input_dim=shape[1:], latent_dim=3))
        res = effective_beta(convention=name)
    else:
        cfg = BetaVAEConfig(input_dim=shape[1:], latent_dim=3)
        if beta is not None:
            cfg = BetaVAEConfig(input_dim=shape[1:], latent_dim=3, beta=beta)
        model = BetaVAE(cfg)
        res = effective_beta(convention=name, beta=beta)
    assert model.model_config.reconstruction_loss == "mse"
    recon, x, mu, log_var = _tensors(shape)
    z = mu
    lib_loss = model.loss_function(recon, x, mu, log_var, z)[0]
    ours, _ = _ours(res, recon, x, mu, log_var)
    torch.testing.assert_close(lib_loss, ours, rtol=1e-12, atol=0)
    # pythae: beta * eta_dec^2 is pythae's beta (1 for VAE, BetaVAEConfig's default 1)
    expected = getattr(model, "beta", 1.0)
    assert res.value == pytest.approx(expected, rel=1e-15)


def _antixk_loss(recons, input, mu, log_var, *, kld_weight, loss_type, beta=4, gamma=1000.0,
                 C=0.0):
    """Copied from AntixK/PyTorch-VAE models/beta_vae.py (commit db41da7), BetaVAE.loss_function
    (VanillaVAE, models/vanilla_vae.py at 2946d7a, is loss_type='V' here:
    ``recons_loss + kld_weight * kld_loss``)."""
    recons_loss = F.mse_loss(recons, input)
    kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1), dim=0)
    if loss_type == "V":
        return recons_loss + kld_weight * kld_loss
    if loss_type == "H":
        return recons_loss + beta * kld_weight * kld_loss
    return recons_loss + gamma * kld_weight * (kld_loss - C).abs()


def test_pytorch_vae_vanilla_and_beta_h():
    recon, x, mu, log_var = _tensors((5, 3, 4, 4))
    d = 3 * 4 * 4
    res = effective_beta(convention="pytorch-vae-vanilla", kld_weight=0.003, dim=d)
    lib = _antixk_loss(recon, x, mu, log_var, kld_weight=0.003, loss_type="V")
    torch.testing.assert_close(lib, _ours(res, recon, x, mu, log_var)[0], rtol=1e-12, atol=0)
    assert res.value == pytest.approx(0.003 * d / 2, rel=1e-14)
    for beta in (None, 10.0):
        res = effective_beta(convention="pytorch-vae-beta-h", kld_weight=0.003, dim=d,
                             beta=beta)
        lib = _antixk_loss(recon, x, mu, log_var, kld_weight=0.003, loss_type="H",
                           beta=4 if beta is None else beta)
        torch.testing.assert_close(lib, _ours(res, recon, x, mu, log_var)[0], rtol=1e-12,
                                   atol=0)


def test_pytorch_vae_beta_b_above_capacity_differs_by_a_constant():
    recon, x, mu, log_var = _tensors((5, 3, 4, 4))
    res = effective_beta(convention="pytorch-vae-beta-b", kld_weight=0.002, dim=48, gamma=50.0)
    ours, kl = _ours(res, recon, x, mu, log_var)
    C = 0.5 * float(kl)  # capacity below the batch KL: |KL - C| = KL - C
    lib = _antixk_loss(recon, x, mu, log_var, kld_weight=0.002, loss_type="B", gamma=50.0, C=C)
    torch.testing.assert_close(lib, ours - 50.0 * 0.002 * C, rtol=1e-12, atol=0)
    assert "capacity" in res.convention.note


@pytest.mark.parametrize("name", [n for n, c in LOSS_CONVENTIONS.items() if c.bernoulli])
def test_bernoulli_conventions_explain(name):
    with pytest.raises(BernoulliDecoderError, match=r"Gaussian decoders.*postcollapse locate"):
        effective_beta(convention=name)
    assert isinstance(BernoulliDecoderError("x"), ValueError)


def test_every_convention_cites_its_source():
    assert {"pythae-vae", "pythae-betavae", "pytorch-vae-vanilla", "pytorch-vae-beta-h",
            "pytorch-vae-beta-b", "pytorch-examples-vae", "keras-vae"} <= set(LOSS_CONVENTIONS)
    for c in LOSS_CONVENTIONS.values():
        assert ("commit" in c.source) or ("0.1.2" in c.source), c.source
        assert c.recon is None or c.recon in ("mse-sum", "mse-mean")


def test_convention_errors():
    with pytest.raises(ValueError, match="unknown convention 'x'; choose one of pythae-vae"):
        effective_beta(convention="x")
    with pytest.raises(ValueError, match=r"fixes kl"):
        effective_beta(convention="pythae-vae", kl="mean")
    with pytest.raises(ValueError, match=r"has no kld_weight \(it takes beta\)"):
        effective_beta(convention="pythae-betavae", kld_weight=0.1)
    with pytest.raises(ValueError, match="needs kld_weight"):
        effective_beta(convention="pytorch-vae-beta-h", dim=10)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        effective_beta(convention="pythae-betavae", beta=-1.0)
