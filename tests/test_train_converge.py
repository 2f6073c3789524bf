"""Training that converges and says so: the Adam plateau rule on the fixed-noise objective,
the defaults that land on the closed form (linear model, exact loss, full batch), and L-BFGS
on an ill-conditioned spectrum."""

import csv
import json

import numpy as np
import pytest
import torch

from postcollapse.cli import main
from postcollapse.data import synthetic
from postcollapse.theory import Moments, optimum, spectrum
from postcollapse.train import load_sweep, sweep


@pytest.fixture(scope="module")
def small():
    return synthetic(n_samples=240, d0=4, d2=3, seed=1)


RELU = {"model": "relu", "sigma": "linear", "latent_dim": 2, "hidden": 6, "batch_size": 32,
        "lr": 3e-3, "dtype": "float64", "check_every": 10, "eval_samples": 4,
        "optimizer": "adam"}


def test_crn_objective_depends_only_on_the_parameters(small):
    """Two evaluations with the same parameters agree exactly; a member's value is the same
    alone and among others (its noise comes from its own seed)."""
    from postcollapse.models import BatchedVAE
    from postcollapse.train.config import SweepConfig
    from postcollapse.train.data import Objective

    x, y = small
    def objective(members):
        cfg = SweepConfig(members=members, **{k: v for k, v in RELU.items()
                                              if k not in ("dtype",)}, dtype="float64")
        cfg = cfg.for_rows(x.shape[0])
        net = BatchedVAE(4, 3, latent_dim=2, betas=[b for b, _ in members], encoder="relu",
                         decoder="relu", sigma="linear", hidden=6,
                         seeds=[s for _, s in members], dtype=torch.float64)
        return Objective(net, cfg, x, y), net

    obj, net = objective([(0.5, 0), (0.5, 3), (2.0, 3)])
    a, b = obj.crn_loss(n_eps=2), obj.crn_loss(n_eps=2)
    assert torch.equal(a, b)
    alone, _ = objective([(2.0, 3)])
    torch.testing.assert_close(alone.crn_loss(n_eps=2)[0], a[2], rtol=1e-12, atol=0)
    with torch.no_grad():
        net.flat.mul_(1.01)
    assert not torch.equal(obj.crn_loss(n_eps=2), a)


def test_adam_decays_the_rate_on_a_plateau_and_converges(small):
    res = sweep(small, betas=[0.3, 3.0], seeds=[0, 1], steps=6000, tol=1e-6, patience=2,
                **RELU)
    lr_final, conv = res.column("lr_final"), res.column("converged")
    steps, rel = res.column("steps"), res.column("final_rel_change")
    assert conv.all() and (steps < 6000).all()
    assert (lr_final < RELU["lr"]).all()  # every member decayed its rate before stopping
    # converged: at the decayed rate the objective moved by at most tol, or the rate hit
    # its floor (lr / 1000)
    assert np.all((rel <= 1e-6) | (lr_final < 2 * RELU["lr"] * 1e-3))
    # decays are powers of lr_decay
    k = np.log(lr_final / RELU["lr"]) / np.log(0.5)
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)


def test_a_member_still_moving_at_the_step_limit_is_not_converged(small):
    res = sweep(small, betas=[0.3, 3.0], steps=30, **RELU)
    assert not res.column("converged").any()
    assert (res.column("steps") == 30).all()
    assert (res.column("lr_final") == RELU["lr"]).all()
    fixed = sweep(small, betas=[0.3], steps=30, lr_decay=None, **RELU)
    assert not fixed.column("converged").any()


def test_new_columns_are_written_and_old_results_still_load(small, tmp_path):
    res = sweep(small, betas=[0.5, 3.0], steps=40, out=tmp_path / "new", **RELU)
    back = load_sweep(tmp_path / "new")
    for r, b in zip(res.rows, back.rows, strict=True):
        assert b["optimizer"] == "adam" and b["dtype"] == "float64"
        assert b["converged"] is r["converged"]
        np.testing.assert_allclose(b["lr_final"], r["lr_final"], rtol=1e-15)
        np.testing.assert_allclose(b["final_rel_change"], r["final_rel_change"], rtol=1e-15)
    info = json.loads((tmp_path / "new" / "sweep.json").read_text())
    assert (info["config"]["optimizer"], info["config"]["dtype"]) == ("adam", "float64")
    # A results.csv of an earlier version: no final_rel_change / lr_final / optimizer / dtype
    old = tmp_path / "old"
    old.mkdir()
    (old / "sweep.json").write_text((tmp_path / "new" / "sweep.json").read_text())
    with open(tmp_path / "new" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    keep = [c for c in rows[0] if c not in ("final_rel_change", "lr_final", "optimizer",
                                            "dtype")]
    with open(old / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keep, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    back = load_sweep(old)
    assert np.isnan(back.rows[0]["lr_final"]) and np.isnan(back.rows[0]["final_rel_change"])
    assert back.rows[0]["optimizer"] == "adam"  # from the sweep's config
    assert [r["converged"] for r in back.rows] == [r["converged"] for r in res.rows]


def _regression(tmp_path, zeta):
    x, y = synthetic(n_samples=2000, d0=5, d2=5, seed=3, zeta=zeta)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return path, spectrum(Moments.from_arrays(x, y))


def _sigma_error(row, spec, beta, latent_dim=5):
    opt = optimum(spec, latent_dim=latent_dim, beta=beta, sigma="learnable")
    sig = np.array([row[f"sigma_{j + 1}"] for j in range(latent_dim)])
    return np.max(np.abs(sig / np.sort(np.sqrt(opt.sigma2))[::-1] - 1))


def test_default_cli_sweep_lands_on_the_closed_form(tmp_path, capsys):
    """No optimiser, dtype or step flags: a linear model on a 5-d regression lands within
    1e-3 of the closed form (loss and sigma) at every beta it reports converged."""
    path, spec = _regression(tmp_path, np.sqrt([9.0, 4.0, 2.0, 1.0, 0.5]))
    z2 = spec.zeta**2
    betas = [0.3 * z2[4], 0.8 * z2[3], 1.5 * z2[2], 0.9 * z2[1], 0.5 * z2[0], 2 * z2[0]]
    out = tmp_path / "out"
    rc = main(["sweep", str(path), "--model", "linear", "--sigma", "learnable",
               "--latent-dim", "5", "--betas", ",".join(repr(float(b)) for b in betas),
               "--out", str(out), "--quiet"])
    assert rc == 0
    res = load_sweep(out)
    assert res.config["optimizer"] == "lbfgs" and res.config["dtype"] == "float64"
    assert {r["optimizer"] for r in res.rows} == {"lbfgs"}
    conv = res.column("converged")
    assert conv.all()
    for row, b in zip(res.rows, betas, strict=True):
        opt = optimum(spec, latent_dim=5, beta=b, sigma="learnable")
        assert abs(row["loss"] / opt.loss - 1) <= 1e-3
        assert _sigma_error(row, spec, b) <= 1e-3


@pytest.mark.slow
def test_lbfgs_converges_on_an_ill_conditioned_spectrum(tmp_path):
    """zeta_1^2 / zeta_5^2 = 1400 and beta = 0.3 beta_5*: plain L-BFGS in whitened encoder
    coordinates stops at its step limit with sigma tens of percent off; with the block
    Gauss-Newton scaling (the default) it converges."""
    _, spec = _regression(tmp_path, np.sqrt([1400.0, 200.0, 30.0, 5.0, 1.0]))
    x, y = synthetic(n_samples=2000, d0=5, d2=5, seed=3, zeta=np.sqrt([1400.0, 200.0, 30.0,
                                                                       5.0, 1.0]))
    z2 = spec.zeta**2
    assert 1300 < z2[0] / z2[4] < 1500
    betas = [0.3 * z2[4], 0.9 * z2[4]]
    res = sweep((x, y), betas=betas)
    assert res.config["optimizer"] == "lbfgs" and res.config["block_scaling"]
    assert res.column("converged").all()
    for row, b in zip(res.rows, betas, strict=True):
        assert _sigma_error(row, spec, b) <= 1e-3
        assert abs(row["theory_gap"]) <= 1e-6
    plain = sweep((x, y), betas=betas[:1], block_scaling=False, steps=300)
    assert not plain.column("converged").any()  # still moving, and it says so
    assert _sigma_error(plain.rows[0], spec, betas[0]) > 1e-2


def test_member_noise_does_not_depend_on_the_chunking_or_the_other_seeds():
    from postcollapse.train.evaluate import NOISE_BLOCK, member_noise

    kw = {"stream": 4, "sample": 1, "d1": 3, "dtype": torch.float64}
    n = 2 * NOISE_BLOCK + 100
    whole = member_noise([7, 2], lo=0, hi=n, **kw)
    parts = torch.cat([member_noise([7, 2], lo=0, hi=NOISE_BLOCK, **kw),
                       member_noise([7, 2], lo=NOISE_BLOCK, hi=n, **kw)], 1)
    assert torch.equal(whole, parts)
    assert torch.equal(member_noise([2], lo=0, hi=n, **kw)[0], whole[1])
    assert not torch.equal(whole[0], whole[1])
    with pytest.raises(ValueError, match="multiple of"):
        member_noise([0], lo=5, hi=n, **kw)
