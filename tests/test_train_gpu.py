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
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-8)
    for rc, rg in zip(cpu.rows, gpu.rows, strict=True):
        assert rg["active_units"] == rc["active_units"]
        np.testing.assert_allclose(rg["loss"], rc["loss"], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("options", [
    {"model": "relu", "sigma": "linear", "batch_size": 64},
    {"model": "linear", "sigma": "learnable"},
])
def test_adam_steps_do_not_synchronise_with_the_host(options):
    from postcollapse.models import BatchedVAE, MomentTensors
    from postcollapse.theory import Moments
    from postcollapse.train.config import SweepConfig
    from postcollapse.train.data import Objective
    from postcollapse.train.trainers import AdamTrainer

    x, _ = _data()
    config = SweepConfig(betas=(0.3, 1.0, 5.0), latent_dim=3, device="cuda",
                         **options).for_rows(x.shape[0])
    net = BatchedVAE(6, 6, latent_dim=3, betas=config.betas, encoder=config.encoder,
                     decoder=config.decoder, sigma=config.sigma).to("cuda")
    mom = Moments.from_arrays(x)
    moments = MomentTensors.from_moments(mom, dtype=net.dtype, device=net.device)
    trainer = AdamTrainer(net, Objective(net, config, x, None, moments=moments), config)
    trainer.step()  # first step: allocations, stream block
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(50):
            trainer.step()
        trainer.check()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.state.step == 51
