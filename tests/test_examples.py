"""examples/: the example's loss really has the effective beta it claims, and the reduced
form runs end to end with predicted = measured active dimensions."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "monitor_vae.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("monitor_vae_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_loss_is_the_paper_loss_at_the_effective_beta():
    from postcollapse.diagnostics import effective_beta

    ex = _load_example()
    g = torch.Generator().manual_seed(0)
    n, d, k, w = 16, 784, 5, 0.0114
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    recons = torch.rand(n, d, generator=g, dtype=torch.float64)
    mu = torch.randn(n, k, generator=g, dtype=torch.float64)
    lv = torch.randn(n, k, generator=g, dtype=torch.float64)
    user = ex.loss_function(recons, x, mu, lv, w)
    b = effective_beta(recon="mse-mean", kl="sum", kld_weight=w, dim=d).value
    se = ((recons - x) ** 2).sum(1).mean()
    kl = (0.5 * (lv.exp() + mu**2 - 1 - lv)).sum(1).mean()
    # user loss = (2/D) * (SE/2 + b KL): the paper's loss at eta_dec = 1, beta = b
    assert float(user) == pytest.approx(float(2 / d * (se / 2 + b * kl)), rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("kld_weight, expected", [(0.0051, 4), (0.0204, 0)])
def test_example_reduced_form_runs_and_agrees(kld_weight, expected):
    # beta*eta_dec^2 = 2.0 (all 4 dims survive) and 8.0 (complete collapse), both > 30 %
    # away from the nearest threshold of the 2000-digit random subset
    r = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "15", "--n-samples", "2000",
         "--latent-dim", "4", "--kld-weight", str(kld_weight)],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r"RESULT effective_beta=(\S+) predicted=(\d+) measured=(\d+) agree=(\w+)",
                  r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) == pytest.approx(kld_weight * 784 / 2, rel=1e-4)
    assert int(m.group(2)) == expected, r.stdout
    assert m.group(2) == m.group(3), r.stdout
