"""effective-beta with a learned decoder variance: the loss R * NLL(v) + w * KL, v trained,
is R times the beta-NLL at beta = w / R, and the surviving modes follow the learned-variance
thresholds."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from postcollapse.cli import main
from postcollapse.diagnostics import effective_beta, predict_modes
from postcollapse.theory import active_modes, spectrum, thresholds
from postcollapse.theory.moments import as_moments


def _data():
    rng = np.random.default_rng(4)
    scales = np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.3])
    return rng.standard_normal((400, 6)) * scales


@pytest.mark.parametrize("recon, r, w, dim, want", [
    ("gaussian-nll", 1.0, 2.5, None, 2.5),
    ("gaussian-nll", 2.0, 3.0, None, 1.5),
    ("gaussian-nll-mean", 1.0, 0.01, 784, 7.84),
])
def test_learned_value_is_the_beta_of_the_beta_nll(recon, r, w, dim, want):
    res = effective_beta(recon=recon, eta_dec="learn", kl="sum", kld_weight=w, recon_weight=r,
                         dim=dim)
    assert res.learned_variance and res.value == pytest.approx(want, rel=1e-14)


def test_learned_loss_is_a_multiple_of_the_beta_nll():
    """R * mean_features-or-sum NLL(v) + w KL == c * (NLL summed + beta KL) for every v."""
    rng = np.random.default_rng(0)
    d, r, w = 7, 1.3, 0.2
    se, kl = rng.uniform(0.5, 3.0, 16), rng.uniform(0.1, 2.0, 16)
    for recon, a in (("gaussian-nll", r), ("gaussian-nll-mean", r / d)):
        b = effective_beta(recon=recon, eta_dec="learn", kl="sum", kld_weight=w,
                           recon_weight=r, dim=d).value
        for v in (0.05, 0.7, 3.0):
            nll = se / (2 * v) + 0.5 * d * math.log(2 * math.pi * v)
            user = np.mean(a * nll + w * kl)
            assert user == pytest.approx(a * np.mean(nll + b * kl), rel=1e-13)


def test_learned_prediction_uses_learned_thresholds():
    x = _data()
    spec = spectrum(as_moments(x))
    th = thresholds(spec, eta_dec="learn")
    beta = float(np.sqrt(th[1] * th[2]))  # between the 2nd and 3rd
    res = effective_beta(recon="gaussian-nll", eta_dec="learn", kl="sum", kld_weight=beta,
                         data=x, latent_dim=4)
    pred = res.prediction
    assert pred.learned_variance
    np.testing.assert_allclose(pred.thresholds, th, rtol=1e-14)
    assert pred.active_modes == 2 == active_modes(spec, beta, eta_dec="learn", latent_dim=4)
    assert pred.interval == pytest.approx((th[2], th[1]), rel=1e-14)
    # the fixed-variance reading of the same data differs: zeta_i^2 thresholds
    fixed = predict_modes(x, beta, latent_dim=4)
    assert not fixed.learned_variance
    np.testing.assert_allclose(fixed.thresholds, spec.zeta**2, rtol=1e-14)
    assert res.to_dict()["learned_variance"] is True


def test_learned_needs_a_gaussian_nll():
    with pytest.raises(ValueError, match="eta_dec applies only to the gaussian-nll"):
        effective_beta(recon="mse-sum", eta_dec="learn", kl="sum")
    with pytest.raises(ValueError, match="eta_dec"):
        effective_beta(recon="gaussian-nll", eta_dec="lern", kl="sum")


def test_cli_effective_beta_eta_dec_learn(capsys, tmp_path):
    x = _data()
    path = tmp_path / "x.npy"
    np.save(path, x)
    th = thresholds(spectrum(as_moments(x)), eta_dec="learn")
    beta = float(np.sqrt(th[0] * th[1]))
    argv = ["effective-beta", "--recon", "gaussian-nll", "--eta-dec", "learn", "--kl", "sum",
            "--kld-weight", repr(beta), "--data", str(path), "--latent-dim", "3"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["learned_variance"] is True and out["eta_dec"] == "learn"
    assert out["effective_beta"] == pytest.approx(beta, rel=1e-14)
    assert out["active_modes"] == 1
    np.testing.assert_allclose(out["thresholds"], th, rtol=1e-12)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "learned decoder variance" in text and "learned-variance thresholds" in text
    assert "predicted surviving modes  1 of latent_dim 3" in text
    with pytest.raises(SystemExit):
        main(["effective-beta", "--recon", "gaussian-nll", "--eta-dec", "x", "--kl", "sum"])
    assert "must be a number > 0 or 'learn'" in capsys.readouterr().err


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "monitor_vae.py"


@pytest.mark.slow
@pytest.mark.parametrize("beta, expected", [(20.0, 4), (120.0, 0)])
def test_monitor_example_learned_variance_agrees(beta, expected):
    # Learned-variance thresholds of the 2000-digit subset: 76.8, 59.0, 52.9, 44.9, ...;
    # beta 20 is 0.8 (log) below the 4th, beta 120 0.45 above the 1st.
    r = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "15", "--n-samples", "2000",
         "--latent-dim", "4", "--learned-variance", "--beta", str(beta)],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r"RESULT effective_beta=(\S+) predicted=(\d+) measured=(\d+) agree=(\w+)",
                  r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) == pytest.approx(beta, rel=1e-12)
    assert int(m.group(2)) == expected, r.stdout
    assert m.group(2) == m.group(3), r.stdout
