"""CollapseMonitor / collapse_metrics: streaming equals direct formulas; MI estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from postcollapse.diagnostics import (  # noqa: E402
    CollapseMonitor,
    collapse_metrics,
    kl_per_dim,
    mutual_information,
)


def _latents(n=1200, seed=0):
    """Dims: strongly active, weakly active, collapsed (prior), nearly collapsed."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    mu = np.stack([2.0 * x[:, 0] + 3.0, 0.3 * x[:, 1], 0.0 * x[:, 0],
                   0.01 * x[:, 0]], axis=1)
    logvar = np.stack([np.full(n, np.log(0.2)), -0.5 + 0.1 * x[:, 0],
                       np.zeros(n), 0.001 * rng.standard_normal(n)], axis=1)
    return mu, logvar


def _direct(mu, logvar, *, threshold=0.01, epsilon=0.01, delta=0.01, eta=1.0):
    s2 = np.exp(logvar)
    kl = 0.5 * (s2 / eta**2 + mu**2 / eta**2 - 1 - np.log(s2 / eta**2))
    sig = np.sqrt(s2)
    below = (kl < epsilon).mean(0)
    return dict(
        kl=kl.mean(0), mu_mean=mu.mean(0), mu_var=mu.var(0), active=mu.var(0) > threshold,
        frac_below=below, collapsed=below >= 1 - delta, sigma_mean=sig.mean(0),
        sigma_std=sig.std(0),
    )


def test_kl_per_dim_closed_form():
    mu = np.array([[0.0, 1.0, -2.0]])
    lv = np.array([[0.0, np.log(4.0), np.log(0.25)]])
    expected = 0.5 * (np.exp(lv) + mu**2 - 1 - lv)
    np.testing.assert_allclose(kl_per_dim(mu, lv), expected, rtol=1e-14)
    # prior N(0, eta^2): KL(N(m, s^2) || N(0, e^2)) = log(e/s) + (s^2 + m^2)/(2e^2) - 1/2
    e = 2.0
    s2 = np.exp(lv)
    ref = np.log(e / np.sqrt(s2)) + (s2 + mu**2) / (2 * e**2) - 0.5
    np.testing.assert_allclose(kl_per_dim(mu, lv, eta_enc=e), ref, rtol=1e-13, atol=1e-15)
    t = kl_per_dim(torch.as_tensor(mu), torch.as_tensor(lv), eta_enc=e)
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("eta", [1.0, 0.7])
def test_one_shot_matches_direct_formulas(eta):
    mu, lv = _latents()
    s = collapse_metrics(mu, lv, eta_enc=eta, mi_samples=0)
    ref = _direct(mu, lv, eta=eta)
    for k, v in ref.items():
        np.testing.assert_allclose(getattr(s, k), v, rtol=1e-10, atol=1e-12, err_msg=k)
    assert s.active_units == int(ref["active"].sum())
    assert s.kl_total == pytest.approx(ref["kl"].sum(), rel=1e-12)
    assert s.collapse_rate == pytest.approx(ref["collapsed"].mean())
    assert s.mi is None and s.mi_total is None


def test_expected_states_of_the_toy_dims():
    mu, lv = _latents()
    s = collapse_metrics(mu, lv, mi_samples=0)
    np.testing.assert_array_equal(s.active, [True, True, False, False])
    np.testing.assert_array_equal(s.collapsed, [False, False, True, True])
    assert s.active_units == 2 and s.collapse_rate == 0.5
    np.testing.assert_allclose(s.kl[2], 0.0, atol=1e-15)
    np.testing.assert_allclose(s.sigma_mean[2], 1.0)
    np.testing.assert_allclose(s.sigma_std[2], 0.0, atol=1e-15)


def test_streaming_equals_one_shot_uneven_batches_float32_tensors():
    mu, lv = _latents(n=1000)
    one = collapse_metrics(mu, lv, mi_samples=0)
    mon = CollapseMonitor(latent_dim=4, mi_samples=0)
    edges = [0, 1, 7, 300, 301, 650, 1000]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        mon.update(torch.as_tensor(mu[a:b], dtype=torch.float64),
                   torch.as_tensor(lv[a:b], dtype=torch.float64))
    s = mon.summary()
    assert s.n_samples == 1000 == mon.n_samples
    for k in ("kl", "mu_mean", "mu_var", "sigma_mean", "sigma_std", "frac_below"):
        np.testing.assert_allclose(getattr(s, k), getattr(one, k), rtol=1e-10, atol=1e-13)
    # float32 tensors that require grad are accepted (detached, accumulated in float64)
    mon.reset()
    t_mu = torch.as_tensor(mu, dtype=torch.float32).requires_grad_()
    mon.update(t_mu * 1.0, torch.as_tensor(lv, dtype=torch.float32))
    s32 = mon.summary()
    np.testing.assert_allclose(s32.mu_var, one.mu_var, rtol=1e-5, atol=1e-7)


def test_welford_is_stable_far_from_zero():
    rng = np.random.default_rng(3)
    mu = 1e6 + 1e-2 * rng.standard_normal((4000, 1))
    lv = np.zeros_like(mu)
    mon = CollapseMonitor(mi_samples=0)
    for i in range(0, 4000, 100):
        mon.update(mu[i:i + 100], lv[i:i + 100])
    np.testing.assert_allclose(mon.summary().mu_var, mu.var(0), rtol=1e-6)


def test_summary_is_immutable_and_reset_forgets():
    mu, lv = _latents(n=50)
    mon = CollapseMonitor(mi_samples=10)
    mon.update(mu, lv)
    s = mon.summary()
    with pytest.raises(ValueError):
        s.kl[0] = 1.0
    with pytest.raises(AttributeError):
        s.kl_total = 0.0
    mon.reset()
    assert mon.n_samples == 0
    with pytest.raises(ValueError, match=r"seen no data"):
        mon.summary()
    d = s.to_dict()
    assert d["latent_dim"] == 4 and len(d["kl"]) == 4 and isinstance(d["active"][0], bool)


def test_batched_models_axis():
    mu, lv = _latents(n=400)
    mu2 = np.stack([mu, 2 * mu])
    lv2 = np.stack([lv, lv])
    s = collapse_metrics(mu2, lv2, mi_samples=50)
    a = collapse_metrics(mu, lv, mi_samples=50)
    b = collapse_metrics(2 * mu, lv, mi_samples=50)
    assert s.kl.shape == (2, 4) and s.active_units.shape == (2,)
    np.testing.assert_allclose(s.kl[0], a.kl, rtol=1e-12)
    np.testing.assert_allclose(s.kl[1], b.kl, rtol=1e-12)
    np.testing.assert_allclose(s.mi[0], a.mi, rtol=1e-10)
    np.testing.assert_array_equal(s.active_units, [a.active_units, b.active_units])


def test_reservoir_is_bounded_uniform_and_deterministic():
    n, cap = 5000, 200
    mu = np.arange(n, dtype=np.float64)[:, None]
    lv = np.zeros_like(mu)
    mon = CollapseMonitor(mi_samples=cap, seed=5)
    for i in range(0, n, 37):
        mon.update(mu[i:i + 37], lv[i:i + 37])
    kept = mon._res_mu[0, :, 0].numpy()
    assert kept.shape == (cap,) and len(np.unique(kept)) == cap  # no duplicates
    # uniform: mean index ~ n/2 (sd of mean of 200 uniform draws ~ 5000/sqrt(12*200) = 102)
    assert abs(kept.mean() - n / 2) < 4 * 102
    mon2 = CollapseMonitor(mi_samples=cap, seed=5)
    for i in range(0, n, 37):
        mon2.update(mu[i:i + 37], lv[i:i + 37])
    np.testing.assert_array_equal(kept, mon2._res_mu[0, :, 0].numpy())


def test_mutual_information_gaussian_closed_form():
    # mu = a x, x ~ N(0, 1), sigma fixed: q(z) = N(0, a^2 + s^2), I = 1/2 log(1 + a^2/s^2)
    rng = np.random.default_rng(0)
    m = 600
    x = rng.standard_normal(m)
    a = np.array([2.0, 0.5, 0.1, 0.0])
    s = np.array([0.5, 0.5, 1.0, 1.0])
    mi = mutual_information(x[:, None] * a, np.broadcast_to(np.log(s**2), (m, 4)))
    truth = 0.5 * np.log1p(a**2 / s**2)
    np.testing.assert_allclose(mi, truth, rtol=0.03, atol=0.005)
    assert np.all(mi <= np.log(m) + 1e-12)
    assert abs(mi[3]) < 1e-12  # identical posteriors: exactly zero


def test_mutual_information_saturates_at_log_m():
    # well-separated, narrow posteriors: the estimate approaches (and never exceeds) log M
    m = 50
    mu = np.arange(m, dtype=np.float64)[:, None] * 100.0
    mi = mutual_information(mu, np.full_like(mu, np.log(1e-2)))
    assert mi[0] == pytest.approx(np.log(m), rel=1e-9)


def test_monitor_mi_uses_reservoir():
    mu, lv = _latents(n=3000)
    s = collapse_metrics(mu, lv, mi_samples=300, seed=1)
    assert s.mi_samples == 300
    # dim 0: mu = 2x + 3, sigma^2 = 0.2 -> I = 1/2 log(1 + 4/0.2)
    assert s.mi[0] == pytest.approx(0.5 * np.log(21.0), rel=0.05)
    assert s.mi[2] == pytest.approx(0.0, abs=1e-12)
    assert s.mi[3] < 1e-3
    assert s.mi_total == pytest.approx(s.mi.sum())


@pytest.mark.parametrize(
    "mu, lv, match",
    [
        (np.zeros((4, 3)), np.zeros((4, 2)), r"same shape"),
        (np.zeros(4), np.zeros(4), r"must be \(n_samples, latent_dim\)"),
        (np.array([[0.0, np.nan]] * 3), np.zeros((3, 2)), r"mu holds 3 non-finite"),
        (np.zeros((3, 2)), np.array([[0.0, np.inf]] * 3), r"logvar holds 3 non-finite"),
        (np.zeros((0, 2)), np.zeros((0, 2)), r"empty"),
    ],
)
def test_bad_inputs(mu, lv, match):
    with pytest.raises(ValueError, match=match):
        CollapseMonitor().update(mu, lv)


def test_bad_settings_and_inconsistent_batches():
    with pytest.raises(ValueError, match=r"delta must be in \[0, 1\)"):
        CollapseMonitor(delta=1.0)
    with pytest.raises(ValueError, match=r"threshold must be a finite number > 0"):
        CollapseMonitor(threshold=-1)
    with pytest.raises(TypeError, match=r"mu must be a torch tensor or numeric"):
        CollapseMonitor().update("abc", "def")
    mon = CollapseMonitor(latent_dim=3)
    with pytest.raises(ValueError, match=r"latent_dim=3"):
        mon.update(np.zeros((2, 4)), np.zeros((2, 4)))
    mon = CollapseMonitor()
    mon.update(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"disagrees with earlier batches"):
        mon.update(np.zeros((2, 5)), np.zeros((2, 5)))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    mu, lv = _latents(n=2000)
    cpu = collapse_metrics(mu, lv, mi_samples=200)
    mon = CollapseMonitor(mi_samples=200)
    for i in range(0, 2000, 256):
        mon.update(torch.as_tensor(mu[i:i + 256], device="cuda", dtype=torch.float32),
                   torch.as_tensor(lv[i:i + 256], device="cuda", dtype=torch.float32))
    s = mon.summary()
    np.testing.assert_allclose(s.kl, cpu.kl, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.mu_var, cpu.mu_var, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.mi, cpu.mi, rtol=1e-4, atol=1e-5)
    assert s.active_units == cpu.active_units
