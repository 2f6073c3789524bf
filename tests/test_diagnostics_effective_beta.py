"""effective_beta: every loss convention against the hand-derived algebra, and one case
checked numerically (a linear VAE trained under the user's convention lands at the
theory's optimum at the effective beta).

The algebra (the module docstring derives it): the paper minimises, per sample and
averaged over the batch,  SE/(2 eta_dec^2) + beta KL  (SE summed over the D features, KL
over the K latent dims). Only the ratio of the coefficients matters for the minimisers:
KL-coef / SE-coef = 2 beta eta_dec^2. A user loss  a_R <SE> + a_K <KL>  is therefore the
paper's loss at  beta eta_dec^2 = a_K / (2 a_R).
"""

from __future__ import annotations

import numpy as np
import pytest

from postcollapse import theory
from postcollapse.diagnostics import effective_beta, predict_modes

D, K, B = 784, 5, 64


@pytest.mark.parametrize(
    "kwargs, expected, algebra",
    [
        # R*SE/D + w*KL_sum: a_R = R/D, a_K = w  ->  w D / (2R)
        (dict(recon="mse-mean", kl="sum", kld_weight=0.01, dim=D), 0.01 * D / 2,
         "F.mse_loss(mean) + w KL: wD/2"),
        (dict(recon="mse-mean", kl="sum", kld_weight=0.01, recon_weight=4.0, dim=D),
         0.01 * D / (2 * 4.0), "R*mse_mean + w KL: wD/(2R)"),
        # R*SE + w*KL_sum: a_R = R -> w/(2R); plain sum-MSE + KL is beta eta^2 = 1/2
        (dict(recon="mse-sum", kl="sum"), 0.5, "SE + KL: 1/2"),
        (dict(recon="mse-sum", kl="sum", kld_weight=3.0, recon_weight=0.5), 3.0,
         "0.5 SE + 3 KL: 3/(2*0.5)"),
        # KL averaged over K latent dims divides the KL weight by K
        (dict(recon="mse-sum", kl="mean", kld_weight=2.0, latent_dim=K), 2.0 / K / 2,
         "SE + 2 KL_mean: (2/K)/2"),
        (dict(recon="mse-mean", kl="mean", kld_weight=0.05, dim=D, latent_dim=K),
         0.05 / K * D / 2, "mse_mean + w KL_mean: (w/K) D / 2"),
        # Gaussian NLL: R [SE/(2 eta^2) + const] + w KL -> a_R = R/(2 eta^2): w eta^2 / R
        (dict(recon="gaussian-nll", kl="sum", kld_weight=4.0, eta_dec=0.5), 4.0 * 0.25,
         "NLL(eta=.5) + 4 KL: 4 * .25"),
        (dict(recon="gaussian-nll", kl="sum", kld_weight=4.0, recon_weight=2.0, eta_dec=0.5),
         4.0 * 0.25 / 2.0, "2 NLL + 4 KL: w eta^2 / R"),
        (dict(recon="gaussian-nll", kl="mean", kld_weight=4.0, eta_dec=2.0, latent_dim=K),
         4.0 / K * 4.0, "NLL(eta=2) + 4 KL_mean: (4/K) * 4"),
        # feature-averaged Gaussian NLL (torch.nn.GaussianNLLLoss): a_R = R/(2 eta^2 D)
        (dict(recon="gaussian-nll-mean", kl="sum", kld_weight=0.01, eta_dec=0.5, dim=D),
         0.01 * 0.25 * D, "NLL_mean(eta=.5) + w KL: w eta^2 D"),
        # both terms summed over the batch: no change
        (dict(recon="mse-mean", kl="sum", kld_weight=0.01, dim=D, recon_batch="sum",
              kl_batch="sum"), 0.01 * D / 2, "both batch-summed: unchanged"),
        # reconstruction summed over the batch, KL averaged: divided by B
        (dict(recon="mse-sum", kl="sum", recon_batch="sum", kl_batch="mean", batch_size=B),
         0.5 / B, "sum_b SE + mean_b KL: 1/(2B)"),
        # reconstruction averaged, KL summed over the batch: multiplied by B
        (dict(recon="mse-mean", kl="sum", kld_weight=1e-4, dim=D, recon_batch="mean",
              kl_batch="sum", batch_size=B), 1e-4 * D / 2 * B, "mean_b mse + w sum_b KL: wDB/2"),
    ],
)
def test_hand_derived_conventions(kwargs, expected, algebra):
    res = effective_beta(**kwargs)
    assert float(res) == pytest.approx(expected, rel=1e-12), algebra
    assert res.value == pytest.approx(res.kl_coef / (2 * res.recon_coef), rel=1e-12)
    assert res.prediction is None


def test_common_tutorial_form_on_mnist_numbers():
    # PyTorch-VAE style: F.mse_loss(recons, x) + kld_weight * mean_b sum_i KL_i, D = 784
    assert float(effective_beta(recon="mse-mean", kl="sum", kld_weight=0.00025, dim=784)) == (
        pytest.approx(0.098, rel=1e-12)
    )
    # kld_weight putting MNIST between its first two thresholds (zeta^2 ~ 5.19, 3.82)
    assert float(effective_beta(recon="mse-mean", kl="sum", kld_weight=0.0112, dim=784)) == (
        pytest.approx(4.3904, rel=1e-12)
    )


def test_invariant_to_overall_scale():
    a = effective_beta(recon="mse-mean", kl="sum", kld_weight=0.02, recon_weight=1.0, dim=10)
    b = effective_beta(recon="mse-mean", kl="sum", kld_weight=0.2, recon_weight=10.0, dim=10)
    assert a.value == pytest.approx(b.value, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(recon="mse-mean", kl="sum"), r"pass dim"),
        (dict(recon="mse-sum", kl="mean"), r"pass latent_dim"),
        (dict(recon="gaussian-nll", kl="sum"), r"needs eta_dec"),
        (dict(recon="mse-sum", kl="sum", eta_dec=0.5), r"eta_dec applies only"),
        (dict(recon="mse-sum", kl="sum", recon_batch="sum"), r"pass batch_size"),
        (dict(recon="mae", kl="sum"), r"recon must be one of"),
        (dict(recon="mse-sum", kl="max"), r"kl must be one of"),
        (dict(recon="mse-sum", kl="sum", kld_weight=-1.0), r"kld_weight must be a finite"),
        (dict(recon="mse-sum", kl="sum", kld_weight=float("nan")), r"kld_weight must be"),
        (dict(recon="mse-sum", kl="sum", recon_weight=0.0), r"recon_weight must be"),
        (dict(recon="mse-mean", kl="sum", dim=0), r"dim must be >= 1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        effective_beta(**kwargs)


def _toy_data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    var = np.array([6.0, 3.0, 0.8, 0.3])
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    x = (rng.standard_normal((n, 4)) * np.sqrt(var)) @ q.T + np.array([1.0, -2.0, 0.5, 3.0])
    return x


def test_prediction_with_data():
    x = _toy_data()
    spec = theory.spectrum(theory.Moments.from_arrays(x))
    thr = theory.thresholds(spec)
    b_mid = np.sqrt(thr[1] * thr[2])  # between the 2nd and 3rd threshold
    w = 2 * b_mid / 4  # mse-mean over D = 4 features
    res = effective_beta(recon="mse-mean", kl="sum", kld_weight=w, data=x, latent_dim=3)
    pred = res.prediction
    assert res.value == pytest.approx(b_mid, rel=1e-12)
    assert pred.active_modes == 2
    np.testing.assert_allclose(pred.thresholds, thr, rtol=1e-12)
    assert pred.interval == (pytest.approx(thr[2]), pytest.approx(thr[1]))
    assert pred.margin == pytest.approx(0.5 * np.log(thr[1] / thr[2]), rel=1e-9)
    # capped by the latent dimension
    p1 = predict_modes(spec, 0.01, latent_dim=1)
    assert p1.active_modes == 1 and p1.interval == (0.0, pytest.approx(thr[0]))
    # all modes collapse above the largest threshold
    p0 = predict_modes(x, thr[0] * 1.5)
    assert p0.active_modes == 0 and p0.interval[1] == np.inf
    with pytest.raises(ValueError, match=r"dim=5 disagrees with the data"):
        effective_beta(recon="mse-mean", kl="sum", dim=5, data=x)


def _train_user_convention(x, *, latent_dim, loss_fn, seed):
    """Full-batch L-BFGS on a linear VAE with data-independent learnable Sigma.

    loss_fn(se, kl) receives se (n, D) = E_eps (x_hat - x)^2 elementwise (exact
    expectation over eps) and kl (n, K) elementwise, and reduces them the user's way.
    """
    import torch  # only these tests need torch
    g = torch.Generator().manual_seed(seed)
    X = torch.as_tensor(x, dtype=torch.float64)
    d = X.shape[1]
    U = (0.3 * torch.randn(d, latent_dim, generator=g, dtype=torch.float64)).requires_grad_()
    W = (0.3 * torch.randn(d, latent_dim, generator=g, dtype=torch.float64)).requires_grad_()
    b_e = torch.zeros(latent_dim, dtype=torch.float64, requires_grad=True)
    b_d = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    logvar = torch.zeros(latent_dim, dtype=torch.float64, requires_grad=True)
    params = [U, W, b_e, b_d, logvar]
    opt = torch.optim.LBFGS(params, lr=1, max_iter=3000, tolerance_grad=1e-12,
                            tolerance_change=1e-15, history_size=50,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        mu = X @ W + b_e
        s2 = torch.exp(logvar)
        # E_eps (U(mu+eps)+b_d - x)^2 per feature = (U mu + b_d - x)^2 + (U^2 @ s2)
        se = (mu @ U.T + b_d - X) ** 2 + (U * U) @ s2
        kl = 0.5 * (s2 + mu * mu - 1.0 - logvar)
        loss = loss_fn(se, kl)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return {k: v.detach().numpy() for k, v in
            zip(("U", "W", "b_e", "b_d"), (U, W, b_e, b_d), strict=True)} | {
        "sigma2": np.exp(logvar.detach().numpy())}


@pytest.mark.parametrize("case", ["mse-mean", "gaussian-nll-klmean", "mse-sum-batchsum"])
def test_user_convention_trains_to_theory_optimum(case):
    x = _toy_data(n=400)
    n, d = x.shape
    k = 3
    spec = theory.spectrum(theory.Moments.from_arrays(x))
    thr = theory.thresholds(spec)
    b = float(np.sqrt(thr[1] * thr[2]))  # 2 of 3 latent dims active, far from thresholds

    if case == "mse-mean":
        # R * mean_{n,D} se + w * mean_n sum_K kl, with b = w D / (2R)
        r = 2.0
        w = 2 * r * b / d
        conv = effective_beta(recon="mse-mean", kl="sum", kld_weight=w, recon_weight=r, dim=d)

        def loss_fn(se, kl):
            return r * se.mean() + w * kl.sum(1).mean()
    elif case == "gaussian-nll-klmean":
        # mean_n [sum_D se/(2 eta^2) + const] + w * mean_n mean_K kl, with b = (w/K) eta^2
        eta = 0.5
        w = b * k / eta**2
        conv = effective_beta(recon="gaussian-nll", kl="mean", kld_weight=w, eta_dec=eta,
                              latent_dim=k)

        def loss_fn(se, kl):
            nll = se.sum(1) / (2 * eta**2) + 0.5 * d * np.log(2 * np.pi * eta**2)
            return nll.mean() + w * kl.mean(1).mean()
    else:
        # sum_{n,D} se + w * mean_n sum_K kl (full batch of n): b = w / (2 n)
        w = 2 * n * b
        conv = effective_beta(recon="mse-sum", kl="sum", kld_weight=w, recon_batch="sum",
                              kl_batch="mean", batch_size=n)

        def loss_fn(se, kl):
            return se.sum() + w * kl.sum(1).mean()

    assert conv.value == pytest.approx(b, rel=1e-12)
    p = _train_user_convention(x, latent_dim=k, loss_fn=loss_fn, seed=1)
    opt = theory.optimum(spec, latent_dim=k, beta=conv.value)
    assert opt.n_active == 2
    # the learned parameters are a minimiser of the paper's loss at beta*eta_dec^2 = b
    lval = theory.vae_loss((x, None), **p, beta=conv.value)
    assert lval == pytest.approx(opt.loss, rel=1e-7, abs=1e-9)
    np.testing.assert_allclose(p["U"] @ p["U"].T, opt.U @ opt.U.T, atol=1e-4)
    np.testing.assert_allclose(p["W"] @ p["U"].T, opt.W @ opt.U.T, atol=1e-4)
    np.testing.assert_allclose(np.sort(p["sigma2"]), np.sort(opt.sigma2), atol=1e-4)
