"""locate with real training: the acceptance runs (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from postcollapse.data import load
from postcollapse.locate import LOCATE_ACTIVE_THRESHOLD, locate
from postcollapse.theory import spectrum, thresholds

pytestmark = pytest.mark.slow

LBFGS = {"model": "linear", "sigma": "learnable", "optimizer": "lbfgs", "dtype": "float64"}


def _check_linear(res, data, latent_dim, rtol):
    beta_star = thresholds(spectrum(data.moments()))[:latent_dim]
    # At the linear optimum Var_x(mu_i) = eta_enc^2 (1 - beta / beta_i*): locate's
    # active-unit rule (Var > 1e-3) flips exactly at beta_i* (1 - 1e-3) (eta_enc = 1).
    flip = beta_star * (1 - LOCATE_ACTIVE_THRESHOLD)
    print("\nmode predicted observed rel_error")
    for m in res.modes:
        print(m.mode, m.predicted, m.observed, f"{m.rel_error:+.4%}")
    assert res.done and len(res.modes) == latent_dim
    for m in res.modes:
        assert m.predicted == pytest.approx(beta_star[m.mode - 1], rel=1e-10)
        assert m.converged_fraction == 1.0 and m.monotone
        for ps in m.per_seed:
            assert ps["upper"] / ps["lower"] - 1 <= rtol * (1 + 1e-9)
            assert ps["lower"] <= flip[m.mode - 1] * (1 + 1e-6)
            assert flip[m.mode - 1] <= ps["upper"] * (1 + 1e-6)
        # Within 1% of beta_i* (the acceptance), and as close as the bracket allows to the
        # rule's own flip point: |err + t| <= rtol / 2.
        assert abs(m.rel_error) <= 0.01
        assert abs(m.rel_error + LOCATE_ACTIVE_THRESHOLD) <= rtol / 2 + 1e-6


def test_linear_synthetic_thresholds_to_one_percent(tmp_path):
    data = load("synthetic")
    res = locate(data, latent_dim=5, seeds=[0, 1], rtol=0.005, out=tmp_path, **LBFGS)
    _check_linear(res, data, 5, 0.005)
    assert (tmp_path / "thresholds.csv").exists()


def test_linear_mnist_thresholds_to_one_percent():
    data = load("mnist")
    # One seed; a first bracket of +-1% and one new beta per bracket and round.
    res = locate(data, latent_dim=5, seeds=[0], rtol=0.01, start_width=0.01, max_points=1,
                 **LBFGS)
    _check_linear(res, data, 5, 0.01)


@pytest.mark.parametrize("model", ["relu", "tanh"])
def test_nonlinear_synthetic_every_mode_bracketed(model, tmp_path):
    # Adam to convergence (the sweep's rule and step budget), brackets to 2%.
    res = locate(load("synthetic"), latent_dim=5, model=model, sigma="linear", hidden=8,
                 seeds=range(3), rtol=0.02, lr=3e-3, batch_size=500, out=tmp_path)
    print(f"\n{model}: mode predicted observed rel_error converged_fraction monotone")
    for m in res.modes:
        print(m.mode, f"{m.predicted:.4g}", f"{m.observed:.4g}", f"{m.rel_error:+.2%}",
              m.converged_fraction, m.monotone, m.note)
    assert (tmp_path / "thresholds.csv").exists() and (tmp_path / "locate.json").exists()
    assert res.done
    for m in res.modes:
        assert m.seeds == 3
        for ps in m.per_seed:
            assert ps["upper"] / ps["lower"] - 1 <= 0.02 * (1 + 1e-9)
    # every member trained, not only the bracket ends, met the convergence rule
    members = [m for r in res.rounds for m in r["members"]]
    assert all(m["converged"] for m in members), [m for m in members if not m["converged"]]
    assert np.all([m.converged_fraction == 1.0 for m in res.modes])
