"""Sweeps of two-level VAEs and of free-bits VAEs: linear members land on the closed forms."""

import numpy as np
import pytest

from postcollapse.train import SweepConfig, load_sweep, sweep


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
    # while every latent sits at KL = lambda. The pinned optimum lies on the kink of
    # max(lambda, KL_j), where L-BFGS stalls slightly above the minimum.
    res = sweep((x, None), betas=[0.5, 3.0, 12.0], free_bits=0.3, latent_dim=3,
                optimizer="lbfgs", dtype="float64", steps=3000, seeds=[1, 2])
    assert res.theory["regime"] == ["aligned", "all pinned", "all pinned"]
    for bi, beta in enumerate(res.theory["betas"]):
        # the better of the two seeds (L-BFGS stalls on the kink at seed-dependent points)
        row = min((r for r in res.rows if r["beta"] == beta), key=lambda r: r["loss"])
        snr = [row[f"snr_{j}"] for j in (1, 2, 3)]
        if beta < 1:
            assert abs(row["theory_gap"]) < 1e-8, row
            np.testing.assert_allclose(snr, res.theory["snr"][bi], rtol=1e-3)
        else:
            assert 0 <= row["theory_gap"] < 5e-3, row
            np.testing.assert_allclose([row[f"kl_{j}"] for j in (1, 2, 3)], 0.3, atol=1e-6)
            np.testing.assert_allclose(snr[:2], res.theory["snr"][bi][:2], rtol=0.25)
            # theory: mode 3 gets nothing; trained: a small residue
            assert res.theory["snr"][bi][2] < 1e-8 and snr[2] < 0.1 * snr[1]


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
