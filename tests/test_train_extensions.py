"""Sweeps of two-level VAEs and of free-bits VAEs: linear members land on the closed forms."""

import os
import signal

import numpy as np
import pytest
import torch

from postcollapse.theory import Moments, freebits_optimum, spectrum
from postcollapse.theory.freebits import FREEBITS_REGIMES
from postcollapse.train import SweepConfig, load_sweep, sweep
from postcollapse.train.trainers import AdamState, LBFGSState


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 5)) * [3.0, 1.6, 1.0, 0.6, 0.3] + 5.0


@pytest.mark.slow
@pytest.mark.parametrize("sigma1, beta2, betas", [
    (0.5, 1.0, [0.5, 1.5, 4.0]),  # sigma1^2 < b' for small beta: both thresholds in play
    (1.5, 1.5, [0.5, 1.2]),       # b' = 3, then 1.25 < sigma1^2: level 2 on every direction
    (None, 2.0, [0.7, 1.5]),      # both variances learnable, beta2 > beta: level 2 collapses
])
def test_two_level_lbfgs_sweep_lands_on_closed_form(x, tmp_path, sigma1, beta2, betas):
    res = sweep((x, None), betas=betas, levels=2, beta2=beta2, sigma1=sigma1, latent_dim=3,
                latent_dim2=2, optimizer="lbfgs", dtype="float64", steps=3000,
                out=tmp_path / "s")
    for row in res.rows:
        assert abs(row["theory_gap"]) < 1e-3, row
        assert row["active_level1"] == row["theory_active_level1"]
        assert row["active_level2"] == row["theory_active_level2"]
    assert res.config["levels"] == 2 and res.config["beta2"] == beta2
    back = load_sweep(tmp_path / "s")
    assert type(back.model).__name__ == "BatchedHierarchicalVAE"
    assert back.rows[0]["active_level2"] == res.rows[0]["active_level2"]


@pytest.mark.slow
def test_free_bits_lbfgs_sweep_against_closed_form(x):
    # beta 0.5: aligned (smooth at the optimum); 3 and 12: all pinned, mode 3 gets no signal
    # while every latent sits at KL = lambda, on the kink of max(lambda, KL_j). The default
    # optimiser (L-BFGS in float64 for this exact full-batch problem) follows the smoothing
    # continuation down to the kink: every member arrives (measured gaps <= 1.1e-9).
    kw = {"betas": [0.5, 3.0, 12.0], "free_bits": 0.3, "latent_dim": 3, "steps": 3000,
          "seeds": [1, 2]}
    res = sweep((x, None), **kw)
    assert (res.config["optimizer"], res.config["dtype"]) == ("lbfgs", "float64")
    assert "free_bits_smoothing" not in res.config  # the default: on
    assert SweepConfig(**kw, optimizer="lbfgs", dtype="float64").for_rows(300).record("arrays") \
        == res.config  # the explicit choice is this very run
    assert res.theory["regime"] == ["aligned", "all pinned", "all pinned"]
    for row in res.rows:
        bi = res.theory["betas"].index(row["beta"])
        assert abs(row["theory_gap"]) < 1e-7 and row["converged"], row
        snr = [row[f"snr_{j}"] for j in (1, 2, 3)]
        np.testing.assert_allclose(snr, res.theory["snr"][bi], rtol=1e-3, atol=1e-4)
        if row["beta"] > 1:
            np.testing.assert_allclose([row[f"kl_{j}"] for j in (1, 2, 3)], 0.3, atol=1e-6)
            assert res.theory["snr"][bi][2] < 1e-8  # mode 3 gets nothing


def _free_bits_problem(seed, lam):
    """Data far from zero with a random spectrum and orientation, and one beta in each
    regime of the free-bits optimum (the middle of its run on a grid)."""
    rng = np.random.default_rng(seed)
    scales = np.sort(rng.uniform(0.2, 3.0, 4))[::-1]
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    x = ((rng.normal(size=(200, 4)) * scales) @ q.T
         + rng.uniform(3.0, 10.0, 4) * rng.choice([-1.0, 1.0], 4))
    spec = spectrum(Moments.from_arrays(x, None))
    grid = np.geomspace(0.1, 30.0, 16)
    regimes = [freebits_optimum(spec, latent_dim=3, beta=float(b), lam=lam).regime
               for b in grid]
    betas = []
    for regime in FREEBITS_REGIMES:
        where = np.flatnonzero([r == regime for r in regimes])
        assert where.size, (seed, regimes)  # every regime is in the grid
        betas.append(float(grid[where[where.size // 2]]))
    return x, betas


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_free_bits_sweeps_reach_every_regime_of_random_problems(seed):
    # Measured: gaps <= 1.1e-9, snr within 7e-5 relative, every member converged.
    x, betas = _free_bits_problem(seed, 0.3)
    res = sweep((x, None), betas=betas, free_bits=0.3, latent_dim=3, seeds=[0, 1])
    assert res.theory["regime"] == list(FREEBITS_REGIMES)
    for row in res.rows:
        bi = res.theory["betas"].index(row["beta"])
        assert abs(row["theory_gap"]) < 1e-7 and row["converged"], row
        snr = [row[f"snr_{j}"] for j in (1, 2, 3)]
        np.testing.assert_allclose(snr, res.theory["snr"][bi], rtol=1e-3, atol=1e-4)
        kl = np.sort([row[f"kl_{j}"] for j in (1, 2, 3)])[::-1]
        np.testing.assert_allclose(kl, res.theory["kl_per_latent"][bi], atol=1e-5)


@pytest.mark.slow
def test_free_bits_adam_follows_the_continuation(x):
    # Adam (float32, plateau decay) on the all-pinned optimum: the smoothing takes it from
    # gaps of 2.7e-4 .. 1.5e-3 (exact max) to <= 2e-5 (measured).
    res = sweep((x, None), members=[(3.0, 1), (12.0, 2), (12.0, 1)], free_bits=0.3,
                latent_dim=3, optimizer="adam", steps=40000)
    for row in res.rows:
        assert 0 <= row["theory_gap"] < 1e-4 and row["converged"], row
        np.testing.assert_allclose([row[f"kl_{j}"] for j in (1, 2, 3)], 0.3, atol=1e-4)


@pytest.mark.slow
def test_free_bits_continuation_resumes_where_it_stopped(x, tmp_path):
    # The smoothing width is part of the checkpoint: an interrupted and resumed sweep is
    # the uninterrupted one bit for bit. This member's width shrinks at iterations 118,
    # 175 and 207 (0.01 -> 1e-5 nats) and reaches 1e-9 at 270; it converges at 282.
    kw = {"betas": [3.0], "free_bits": 0.3, "latent_dim": 2, "steps": 400}
    full = sweep((x, None), out=tmp_path / "full", **kw)
    assert full.rows[0]["converged"] and abs(full.rows[0]["theory_gap"]) < 1e-7

    def interrupt(info):
        if info.step == 220:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
        sweep((x, None), out=out, callback=interrupt, **kw)
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["state"]["tau"].tolist() == pytest.approx([1e-5], rel=1e-12)
    res = sweep((x, None), out=out, resume=True, **kw)
    torch.testing.assert_close(res.model.flat, full.model.flat, rtol=0, atol=0)
    assert res.rows[0]["loss"] == full.rows[0]["loss"]


def test_trainer_states_carry_tau_and_load_older_checkpoints():
    for cls in (AdamState, LBFGSState):
        st = cls.fresh(2, "cpu")
        st.tau = torch.tensor([1e-3, 1e-9], dtype=torch.float64)
        back = cls.fresh(2, "cpu")
        back.load(st.to_dict(), "cpu")
        assert back.tau.tolist() == [1e-3, 1e-9]
        old = {k: v for k, v in st.to_dict().items() if k != "tau"}  # before free bits
        again = cls.fresh(2, "cpu")
        again.load(old, "cpu")
        assert again.tau is None and again.step == st.step


def test_free_bits_smoothing_option():
    assert SweepConfig(betas=[1.0], free_bits=0.1).free_bits_smoothing is True
    assert SweepConfig(betas=[1.0], free_bits=0.1, free_bits_mode="batch",
                       batch_size=10).free_bits_smoothing is False
    off = SweepConfig(betas=[1.0], free_bits=0.1, free_bits_smoothing=False)
    assert off.record("d")["free_bits_smoothing"] is False
    # recorded only when turned off: earlier free-bits records (without it) still match
    assert "free_bits_smoothing" not in SweepConfig(betas=[1.0]).record("d")
    assert "free_bits_smoothing" not in SweepConfig(betas=[1.0], free_bits=0.1).record("d")
    with pytest.raises(ValueError, match="free_bits_smoothing needs free_bits"):
        SweepConfig(betas=[1.0], free_bits_smoothing=True)
    with pytest.raises(ValueError, match="needs free_bits_mode 'dataset'"):
        SweepConfig(betas=[1.0], free_bits=0.1, free_bits_mode="batch",
                    free_bits_smoothing=True)
    with pytest.raises(TypeError, match="free_bits_smoothing must be True, False or None"):
        SweepConfig(betas=[1.0], free_bits=0.1, free_bits_smoothing="yes")


def test_free_bits_batch_mode_trains_minibatches(x):
    res = sweep((x, None), betas=[3.0], free_bits=0.3, free_bits_mode="batch", latent_dim=2,
                batch_size=50, steps=60, dtype="float64")
    row = res.rows[0]
    assert np.isfinite(row["loss"]) and {"snr_1", "signal_1", "regime"} <= set(row)
    assert res.config["free_bits_mode"] == "batch"


def test_extension_options_are_checked():
    with pytest.raises(ValueError, match="levels=2 needs beta2"):
        SweepConfig(betas=[1.0], levels=2)
    with pytest.raises(ValueError, match="sigma1 needs levels=2"):
        SweepConfig(betas=[1.0], sigma1=0.5)
    with pytest.raises(ValueError, match="free_bits is for the one-level"):
        SweepConfig(betas=[1.0], levels=2, beta2=1.0, free_bits=0.1)
    with pytest.raises(ValueError, match="free_bits_mode must be"):
        SweepConfig(betas=[1.0], free_bits=0.1, free_bits_mode="example")
    with pytest.raises(ValueError, match="needs full batch"):
        SweepConfig(betas=[1.0], free_bits=0.1, batch_size=10).for_rows(100)
    cfg = SweepConfig(betas=[1.0], levels=2, beta2=0.5)
    assert cfg.latent_dim2 == cfg.latent_dim and cfg.family == "hierarchical"
    # a one-level sweep's record (and so its checkpoint fingerprint) is unchanged
    assert not {"levels", "beta2", "free_bits"} & set(SweepConfig(betas=[1.0]).record("d"))


def test_free_bits_rows_of_a_nonlinear_decoder_hold_the_free_bits_loss(x):
    # the evaluated loss of a sampled-loss (MLP decoder) member is rec + beta sum max(lam, KL_j)
    lam = 2.0
    res = sweep((x, None), betas=[0.5, 3.0], model="relu", sigma="linear", hidden=6,
                free_bits=lam, latent_dim=3, steps=40, lr=1e-3, eval_samples=2)
    pinned = 0
    for row in res.rows:
        kls = np.array([row[f"kl_{j}"] for j in (1, 2, 3)])
        assert row["kl"] == pytest.approx(kls.sum(), rel=1e-9)
        expect = row["rec"] + row["beta"] * np.maximum(lam, kls).sum()
        assert row["loss"] == pytest.approx(expect, rel=1e-9)
        if (kls < lam).any():  # there the free-bits loss exceeds the plain beta-VAE loss
            pinned += 1
            assert row["loss"] > row["rec"] + row["beta"] * row["kl"] + 1e-6
    assert pinned
