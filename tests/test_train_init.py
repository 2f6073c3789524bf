"""init="linear": members start at the linear theory's global optimum of their beta,
embedded in their network (models.embed)."""

import json

import numpy as np
import pytest
import torch

from postcollapse.data import load
from postcollapse.models import BatchedVAE, sampled_loss
from postcollapse.models.embed import TANH_RTOL, embed_linear_optimum
from postcollapse.theory import optimum, spectrum
from postcollapse.train import SweepConfig, sweep

BETAS = (0.5, 3.0, 10.0)  # five, three and one active mode (beta_i* = 14, 8, 4.5, 2, 0.8)


@pytest.fixture(scope="module")
def data():
    return load("synthetic")


def _embedded(data, model, sigma, *, hidden=8, betas=BETAS):
    """A float64 BatchedVAE (encoder=decoder=model) started at the optimum of each beta."""
    x = np.asarray(data.x, dtype=np.float64)  # the target is data.y (a regression VAE)
    spec = spectrum(data.moments())
    mode = "prior" if sigma == "prior" else "learnable"
    net = BatchedVAE(x.shape[1], x.shape[1], latent_dim=5, betas=betas, encoder=model,
                     decoder=model, sigma=sigma, hidden=hidden, seeds=[0] * len(betas),
                     dtype=torch.float64)
    optima = [optimum(spec, latent_dim=5, beta=b, sigma=mode) for b in betas]
    embed_linear_optimum(net, optima, x)
    return net, optima, torch.from_numpy(x)


@pytest.mark.parametrize("sigma", ["linear", "learnable", "prior", "mlp"])
@pytest.mark.parametrize("model", ["relu", "tanh"])
@torch.no_grad()
def test_embedded_mlp_computes_the_linear_encoder_and_decoder(data, model, sigma):
    net, optima, x = _embedded(data, model, sigma)
    lin, _, _ = _embedded(data, "linear", sigma)
    mu, logvar = net.encode(x)
    mu_lin, logvar_lin = lin.encode(x)
    for i, opt in enumerate(optima):  # the linear net is the optimum itself
        np.testing.assert_allclose(mu_lin[i].numpy(), x.numpy() @ opt.W + opt.b_e,
                                   rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logvar, logvar_lin, rtol=1e-12, atol=1e-12)
    scale = mu_lin.abs().amax(1, keepdim=True)  # (K, 1, d1): the largest |mu_j| on the data
    err = ((mu - mu_lin).abs() / scale.clamp_min(1e-300)).amax().item()
    # ReLU: exact up to rounding of the shift c (|c| ~ 2 data ranges); Tanh: the designed
    # relative error of a small-slope unit, at most TANH_RTOL of max |mu_j|.
    assert err < (1e-13 if model == "relu" else TANH_RTOL)
    # Decoder on draws z = mu + sigma eps of the encoder (8-sigma margins for ReLU).
    g = torch.Generator().manual_seed(0)
    z = mu_lin + torch.exp(0.5 * logvar_lin) * torch.randn(mu_lin.shape, generator=g,
                                                            dtype=torch.float64)
    y, y_lin = net.decode(z), lin.decode(z)
    rel = ((y - y_lin).norm() / y_lin.norm()).item()
    assert rel < (1e-13 if model == "relu" else TANH_RTOL)


@pytest.mark.parametrize("model", ["relu", "tanh"])
@torch.no_grad()
def test_embedded_mlp_has_the_linear_optimum_sampled_loss(data, model):
    """Same noise for the MLP and the linear optimum: the sampled losses agree to rounding
    (ReLU) or to about TANH_RTOL^2 (Tanh: the optimum is stationary, so an O(rtol) error of
    the maps moves the loss at second order; measured 4e-6 at beta 0.5)."""
    net, _, x = _embedded(data, model, "linear")
    lin, _, _ = _embedded(data, "linear", "linear")
    y = torch.from_numpy(np.asarray(data.y, dtype=np.float64))
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(net.n_members, x.shape[0], 5, generator=g, dtype=torch.float64)
    loss = sampled_loss(net, x, y, eps=eps).loss
    loss_lin = sampled_loss(lin, x, y, eps=eps).loss
    gap = (loss / loss_lin - 1).abs().max().item()
    assert gap < (1e-13 if model == "relu" else 10 * TANH_RTOL**2)


def test_spare_units_keep_their_cold_first_layer_and_zero_output(data):
    net, _, _ = _embedded(data, "relu", "linear", hidden=12)
    cold = BatchedVAE(5, 5, latent_dim=5, betas=BETAS, encoder="relu", decoder="relu",
                      sigma="linear", hidden=12, seeds=[0] * 3, dtype=torch.float64)
    p, q = net.params(), cold.params()
    torch.testing.assert_close(p["enc_w1"][:, :, 5:], q["enc_w1"][:, :, 5:])
    torch.testing.assert_close(p["dec_w1"][:, :, 5:], q["dec_w1"][:, :, 5:])
    assert p["enc_w2"][:, 5:].abs().max() == 0 and p["dec_w2"][:, 5:].abs().max() == 0


@pytest.mark.parametrize("sigma", ["linear", "learnable"])
@pytest.mark.parametrize("model", ["relu-linear", "tanh-linear"])
def test_sweep_starts_at_the_theory_loss_exact_decoder(data, model, sigma):
    """A linear decoder is evaluated exactly, so the sweep's own loss at the start (one
    Adam step of size ~1e-12) must equal the closed-form min_loss: to rounding for a ReLU
    encoder, to TANH_RTOL^2 for Tanh (measured: 3e-7 at beta 0.5)."""
    res = sweep(data, betas=BETAS, model=model, sigma=sigma, hidden=8, steps=1, lr=1e-12,
                optimizer="adam", dtype="float64", init="linear")
    gaps = np.array([abs(r["theory_gap"]) for r in res.rows])
    assert gaps.max() < (1e-12 if model.startswith("relu") else TANH_RTOL**2)
    assert [r["active_modes"] for r in res.rows] == [r["theory_active"] for r in res.rows]


@pytest.mark.parametrize("sigma", ["linear", "learnable"])
@pytest.mark.parametrize("model", ["relu", "tanh"])
def test_sweep_starts_at_the_theory_loss_sampled_decoder(data, model, sigma):
    """An MLP decoder's loss is a Monte Carlo estimate (eval_samples draws per row): the
    start must match min_loss within 4 of its standard errors, measured here from the
    spread of one-draw estimates at the linear optimum."""
    n_eval = 64
    res = sweep(data, betas=BETAS, model=model, sigma=sigma, hidden=8, steps=1, lr=1e-12,
                optimizer="adam", dtype="float64", init="linear", eval_samples=n_eval)
    lin, _, x = _embedded(data, "linear", sigma)
    y = torch.from_numpy(np.asarray(data.y, dtype=np.float64))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        shape = (3, x.shape[0], 5)
        draws = torch.stack([  # (32, K) one-draw estimates
            sampled_loss(lin, x, y, eps=torch.randn(shape, generator=g, dtype=torch.float64)).loss
            for _ in range(32)])
    se = (draws.std(0) / np.sqrt(n_eval)).numpy()
    theory = np.array([r["theory_loss"] for r in res.rows])
    loss = np.array([r["loss"] for r in res.rows])
    assert np.all(np.abs(loss - theory) < 4 * se), (loss - theory, se)
    assert [r["active_modes"] for r in res.rows] == [r["theory_active"] for r in res.rows]


@pytest.mark.parametrize("sigma", ["learnable", "prior"])
def test_linear_model_started_at_the_optimum_stays_there(data, sigma):
    res = sweep(data, betas=(0.5, 3.0, 10.0, 20.0), sigma=sigma, init="linear")
    for r in res.rows:
        assert abs(r["theory_gap"]) < 1e-10
        assert r["converged"] and r["active_modes"] == r["theory_active"]


def test_learned_eta_dec_starts_at_the_learned_optimum(data):
    # latent 3 < rank 5: the beta-NLL is bounded (docs/THEORY.md, learned decoder variance)
    res = sweep(data, betas=(0.5, 3.0), latent_dim=3, eta_dec="learn", init="linear",
                steps=1, optimizer="lbfgs")
    spec = spectrum(data.moments())
    for r in res.rows:
        opt = optimum(spec, latent_dim=3, beta=r["beta"], eta_dec="learn")
        np.testing.assert_allclose(r["eta_dec"], opt.eta_dec, rtol=1e-9)
        np.testing.assert_allclose(r["nll"], opt.nll, rtol=1e-9)


def test_cold_start_is_unchanged_and_not_recorded(data, tmp_path):
    cold = sweep(data, betas=(3.0,), model="relu", sigma="linear", steps=20, optimizer="adam",
                 out=tmp_path / "cold")
    default = sweep(data, betas=(3.0,), model="relu", sigma="linear", steps=20,
                    optimizer="adam", init="cold")
    assert cold.rows[0]["loss"] == default.rows[0]["loss"]
    assert "init" not in json.loads((tmp_path / "cold" / "sweep.json").read_text())["config"]
    warm = sweep(data, betas=(3.0,), model="relu", sigma="linear", steps=20, optimizer="adam",
                 init="linear", out=tmp_path / "warm")
    assert json.loads((tmp_path / "warm" / "sweep.json").read_text())["config"]["init"] == \
        "linear"
    assert warm.rows[0]["loss"] < cold.rows[0]["loss"]


@pytest.mark.parametrize(("options", "match"), [
    ({"init": "warm"}, "init"),
    ({"init": "linear", "model": "relu", "hidden": 4}, r"hidden >= latent_dim \(5\)"),
    ({"init": "linear", "model": "tanh-linear", "hidden": 2}, "hidden 2"),
    ({"init": "linear", "free_bits": 0.1}, "one-level VAE without free bits"),
    ({"init": "linear", "levels": 2, "beta2": 1.0}, "one-level VAE without free bits"),
])
def test_bad_init_raises(options, match):
    with pytest.raises(ValueError, match=match):
        SweepConfig(betas=(1.0,), **options)


def test_embed_needs_one_optimum_per_member(data):
    net = BatchedVAE(5, 5, latent_dim=5, betas=BETAS, encoder="relu", decoder="relu")
    opt = optimum(spectrum(data.moments()), latent_dim=5, beta=1.0)
    with pytest.raises(ValueError, match=r"one entry per member \(3\)"):
        embed_linear_optimum(net, [opt], data.x)
    narrow = BatchedVAE(5, 5, latent_dim=5, betas=(1.0,), encoder="tanh", decoder="tanh",
                        hidden=3)
    with pytest.raises(ValueError, match="hidden >= latent_dim"):
        embed_linear_optimum(narrow, [opt], data.x)


def test_cli_sweep_init_linear(tmp_path, capsys):
    from postcollapse.cli import main

    out = tmp_path / "o"
    rc = main(["sweep", "synthetic", "--betas", "0.5,3", "--init", "linear", "--steps", "5",
               "--out", str(out), "--quiet"])
    assert rc == 0
    obj = json.loads((out / "sweep.json").read_text())
    assert obj["config"]["init"] == "linear"
    rc = main(["sweep", "synthetic", "--betas", "3", "--model", "relu", "--hidden", "4",
               "--init", "linear", "--out", str(tmp_path / "bad"), "--quiet"])
    assert rc == 2
    assert "hidden >= latent_dim (5)" in capsys.readouterr().err


def test_cli_locate_init_linear(tmp_path, capsys):
    from postcollapse.cli import main

    out = tmp_path / "loc"
    rc = main(["locate", "synthetic", "--init", "linear", "--latent-dim", "1", "--out",
               str(out), "--quiet", "--json"])
    assert rc == 0
    (mode,) = json.loads(capsys.readouterr().out)["modes"]
    # started at the optimum, the unit's Var(mu_1) = 1 - beta / 14 crosses the 1e-3 rule at
    # beta = 0.999 * 14, which the located bracket (1% wide) must hold
    assert mode["lower"] <= 0.999 * 14.0 <= mode["upper"]
    assert mode["upper"] / mode["lower"] - 1 <= 0.0101
    assert json.loads((out / "locate.json").read_text())["config"]["init"] == "linear"
