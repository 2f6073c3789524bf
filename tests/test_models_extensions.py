"""The two-level batched VAE and the free-bits option: torch losses against the numpy theory,
and ``diagnostics.mode_signal`` against the free-bits optimum."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from postcollapse.diagnostics import mode_signal
from postcollapse.models import (
    BatchedHierarchicalVAE,
    BatchedVAE,
    evaluate_hierarchical_loss,
    evaluate_loss,
    exact_loss,
    hierarchical_exact_loss,
    hierarchical_sampled_loss,
    moment_tensors,
    moments_loss,
    smooth_free_bits,
)
from postcollapse.theory import (
    HierarchicalParams,
    Moments,
    freebits_loss,
    freebits_optimum,
    hierarchical_loss,
    spectrum,
)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 4.0
    y = x @ rng.normal(size=(5, 3)) + rng.normal(size=(300, 3)) - 2.0
    return x, y


def _hmodel(sigma1, *, encoder="linear", decoder="linear", seed=0, d2=5):
    m = BatchedHierarchicalVAE(5, d2, latent_dim=3, latent_dim2=2, betas=[0.5, 1.3, 2.0],
                               betas2=[2.0, 0.4, 1.0], sigma1=sigma1, encoder=encoder,
                               decoder=decoder, hidden=4, seeds=[0, 1, 2],
                               eta_enc=[1.0, 1.5, 0.8], eta_dec=[0.8, 1.2, 1.0],
                               dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.flat.copy_(0.5 * torch.randn(m.flat.shape, generator=g, dtype=torch.float64))
    return m


@pytest.mark.parametrize("sigma1", [None, 0.7])
@pytest.mark.parametrize("plain", [True, False])
def test_hierarchical_exact_loss_equals_theory(xy, sigma1, plain):
    x, y = xy
    y = None if plain else y
    m = _hmodel(sigma1, d2=5 if plain else 3, seed=3)
    X = torch.tensor(x)
    parts = hierarchical_exact_loss(m, X, None if y is None else torch.tensor(y))
    f = m.linear_factors()
    for k in range(m.n_members):
        p = HierarchicalParams(*(f[n][k] for n in HierarchicalParams._fields))
        ref = hierarchical_loss((x, y), p, beta=float(m.beta[k]), beta2=float(m.beta2[k]),
                                eta_enc=float(m.eta_enc[k]), eta_dec=float(m.eta_dec[k]))
        assert abs(float(parts.loss[k]) - ref) <= 1e-10 * abs(ref)
    # loss = rec + beta1 * KL(level 1) + beta2 * KL(level 2)
    kl1, kl2 = parts.kl_dims[:, :3].sum(-1), parts.kl_dims[:, 3:].sum(-1)
    np.testing.assert_allclose(parts.loss, parts.rec + m.beta * kl1 + m.beta2 * kl2,
                               rtol=1e-13)


def test_hierarchical_sampled_loss_is_unbiased(xy):
    x, _ = xy
    m = _hmodel(None)
    X = torch.tensor(x)
    ex = hierarchical_exact_loss(m, X).loss
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([
        hierarchical_sampled_loss(m, X, eps=torch.randn(3, 300, 5, generator=g,
                                                        dtype=torch.float64)).loss
        for _ in range(400)])
    se = draws.std(0) / np.sqrt(draws.shape[0])
    assert torch.all((draws.mean(0) - ex).abs() < 5 * se)


def test_hierarchical_mlp_levels_and_config_roundtrip(xy):
    x, _ = xy
    m = _hmodel(0.5, encoder="relu", decoder="tanh")
    assert not m.exact
    with pytest.raises(ValueError, match="needs linear maps"):
        hierarchical_exact_loss(m, torch.tensor(x))
    parts = evaluate_hierarchical_loss(m, torch.tensor(x), n_eps=4)
    assert parts.loss.shape == (3,) and torch.all(torch.isfinite(parts.loss))
    m2 = BatchedHierarchicalVAE.from_config(m.config())
    with torch.no_grad():
        m2.flat.copy_(m.flat)
    np.testing.assert_array_equal(evaluate_hierarchical_loss(m2, torch.tensor(x), n_eps=4).loss,
                                  parts.loss)


def _fb_model(lam):
    m = BatchedVAE(5, 5, latent_dim=3, betas=[0.5, 2.0], seeds=[0, 1], eta_enc=1.3,
                   eta_dec=0.7, dtype=torch.float64, free_bits=lam)
    with torch.no_grad():
        m.flat.copy_(0.3 * torch.randn(m.flat.shape, generator=torch.Generator().manual_seed(2),
                                       dtype=torch.float64))
    return m


@pytest.mark.parametrize("lam", [0.0, 0.4, 3.0])
def test_free_bits_losses_equal_theory(xy, lam):
    x, _ = xy
    m = _fb_model(lam)
    X = torch.tensor(x)
    ex = exact_loss(m, X)
    mo = moments_loss(m, moment_tensors(Moments.from_arrays(x)))
    ev = evaluate_loss(m, X, chunk_size=70)  # the max is taken after the chunks are summed
    f = m.linear_factors()
    for k in range(2):
        ref = freebits_loss((x, None), U=f["U"][k], W=f["W"][k], sigma2=f["sigma2"][k],
                            b_e=f["b_e"][k], b_d=f["b_d"][k], beta=float(m.beta[k]), lam=lam,
                            eta_enc=1.3, eta_dec=0.7)
        for parts in (ex, mo, ev):
            assert abs(float(parts.loss[k]) - ref) <= 1e-10 * abs(ref)
    # kl stays the plain KL: the penalty is only in the loss
    np.testing.assert_allclose(ex.kl, ex.kl_dims.sum(-1), rtol=1e-14)


def test_free_bits_rejects_bad_lambda():
    with pytest.raises(ValueError, match="free bits"):
        _fb_model(-1.0)


def test_mode_signal_sees_a_dead_mode_that_per_latent_kl_hides():
    # Two latents, all pinned at KL = lam, both stacked on mode 1: mode 2 gets no signal.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 4)) * [3.0, 1.0, 0.5, 0.2] + 5.0
    spec = spectrum(Moments.from_arrays(x))
    lam = 0.1
    opt = freebits_optimum(spec, latent_dim=2, beta=20.0, lam=lam)
    assert opt.regime == "all pinned"
    np.testing.assert_allclose(opt.kl, lam, rtol=1e-8)
    mu = x @ opt.W + opt.b_e
    ms = mode_signal(mu, x, spec, sigma2=opt.sigma2)
    np.testing.assert_allclose(ms.snr, opt.snr, rtol=1e-8, atol=1e-10)
    assert ms.snr[0] > 0.1 and ms.signal[0] > 0.05
    np.testing.assert_allclose(ms.signal[1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(ms.snr[1:], 0.0, atol=1e-12)


def test_mode_signal_bad_input():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    spec = spectrum(Moments.from_arrays(x))
    with pytest.raises(ValueError, match="d0=3"):
        mode_signal(np.zeros((50, 2)), np.zeros((50, 4)), spec)
    with pytest.raises(ValueError, match="sigma2"):
        mode_signal(rng.normal(size=(50, 2)), x, spec, sigma2=[1.0, -1.0])


@settings(max_examples=60, deadline=None)
@given(kld=hnp.arrays(np.float64, (3, 4), elements=st.floats(0.0, 20.0)),
       lam=st.floats(0.0, 5.0), tau=st.floats(1e-9, 1.0))
def test_smooth_free_bits_bounds_the_exact_penalty(kld, lam, tau):
    # sum_j max(lam, KL_j) <= smoothing <= that + d1 tau log 2, and -> the max as tau -> 0
    k = torch.as_tensor(kld)
    exact = k.clamp_min(lam).sum(-1)
    smooth = smooth_free_bits(k, lam, torch.full((3,), tau, dtype=torch.float64))
    slack = 1e-12 * (1.0 + exact)
    assert torch.all(smooth >= exact - slack)
    assert torch.all(smooth <= exact + 4 * tau * np.log(2.0) + slack)
    sharp = smooth_free_bits(k, lam, torch.full((3,), 1e-12 * tau, dtype=torch.float64))
    torch.testing.assert_close(sharp, exact, rtol=1e-12, atol=5e-12 * tau)
