"""The CUDA path of a sweep gives the CPU's results (runs only where CUDA exists)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((256, 6)) @ np.diag([3.0, 2.0, 1.5, 1.0, 0.5, 0.2])
    return x, None


@pytest.mark.parametrize("options", [
    {"model": "relu", "sigma": "linear", "batch_size": 64},  # mini-batch, sampled noise
    {"model": "linear", "sigma": "learnable"},  # full batch on the moments
    {"model": "linear", "sigma": "linear"},  # full batch on the rows, exact loss
    {"model": "linear", "sigma": "learnable", "optimizer": "lbfgs", "steps": 30},
])
def test_cuda_sweep_matches_cpu(options):
    from postcollapse.train import sweep

    kw = {"betas": [0.3, 1.0, 5.0], "latent_dim": 3, "hidden": 8, "steps": 200,
          "dtype": "float64", "tol": 0.0, "eval_samples": 4, **options}
    cpu = sweep(_data(), device="cpu", **kw)
    gpu = sweep(_data(), device="cuda", **kw)
    assert gpu.timing["device"].startswith("cuda")
    a = cpu.model.flat.detach().numpy()
    b = gpu.model.flat.detach().cpu().numpy()
    np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-9)
    for rc, rg in zip(cpu.rows, gpu.rows, strict=True):
        assert rg["active_units"] == rc["active_units"]
        np.testing.assert_allclose(rg["loss"], rc["loss"], rtol=1e-7, atol=1e-10)
