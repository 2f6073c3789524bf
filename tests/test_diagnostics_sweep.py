"""The monitor and the gap on our own sweeps: same active units and per-dimension KL as
the sweep reports, and the gap of an L-BFGS-trained linear VAE to the closed form ~ 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import postcollapse.train as train
from postcollapse import theory  # noqa: E402
from postcollapse.diagnostics import (  # noqa: E402
    CollapseMonitor,
    compare_active_modes,
    gap_to_optimum,
)


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    var = np.array([5.0, 2.5, 0.9, 0.2])
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    return (rng.standard_normal((n, 4)) * np.sqrt(var)) @ q.T + 1.0


@pytest.fixture(scope="module")
def swept():
    x = _data()
    spec = theory.spectrum(theory.Moments.from_arrays(x))
    thr = theory.thresholds(spec)
    # one beta in each gap: 3, 2, 1 and 0 active modes (latent_dim 3)
    betas = [0.5 * thr[2], np.sqrt(thr[1] * thr[2]), np.sqrt(thr[0] * thr[1]), 1.5 * thr[0]]
    res = train.sweep((x, None), betas=betas, model="linear", sigma="learnable",
                      latent_dim=3, optimizer="lbfgs", dtype="float64", steps=500,
                      device="cpu")
    return x, spec, betas, res


def test_monitor_matches_sweep_rows(swept):
    x, spec, betas, res = swept
    with torch.no_grad():
        mu, logvar = res.model.encode(torch.as_tensor(x, dtype=torch.float64))
    assert mu.shape == (len(betas), x.shape[0], 3)
    mon = CollapseMonitor(latent_dim=3, mi_samples=0)
    for i in range(0, x.shape[0], 128):  # streamed in batches of the (K, n, d1) outputs
        mon.update(mu[:, i:i + 128], logvar[:, i:i + 128])
    s = mon.summary()
    for k, row in enumerate(res.rows):
        assert s.active_units[k] == row["active_units"], row["beta"]
        order = np.argsort(-s.sigma_mean[k], kind="stable")  # the sweep's column order
        kl_row = np.array([row[f"kl_{j + 1}"] for j in range(3)])
        sig_row = np.array([row[f"sigma_{j + 1}"] for j in range(3)])
        np.testing.assert_allclose(s.sigma_mean[k][order], sig_row, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(s.kl[k][order], kl_row, rtol=1e-6, atol=1e-9)
        assert s.kl_total[k] == pytest.approx(row["kl"], rel=1e-6, abs=1e-9)
    np.testing.assert_array_equal(s.active_units, [3, 2, 1, 0])


def test_gap_and_active_modes_on_sweep(swept):
    x, spec, betas, res = swept
    losses = np.array([r["loss"] for r in res.rows])
    g = gap_to_optimum(spec, beta=np.array(betas), latent_dim=3, loss=losses)
    assert g.gap.shape == (4,)
    assert np.all(np.abs(g.relative_gap) < 1e-6), g.relative_gap
    for b, row in zip(betas, res.rows, strict=True):
        c = compare_active_modes(row["active_units"], x, b, latent_dim=3)
        assert c.agree and c.margin > 0.1
