"""Batched sweeps: members independent, masked stops, divergence, checkpoint / resume."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from postcollapse.data import synthetic
from postcollapse.train import MaskedAdam, load_sweep, result_columns, sweep


@pytest.fixture(scope="module")
def data():
    return synthetic(n_samples=240, d0=4, d2=3, seed=1)


def _rows_equal(a, b, *, rtol=1e-10):
    for ra, rb in zip(a, b, strict=True):
        for key, va in ra.items():
            if key == "wall_time":
                continue
            if isinstance(va, float):
                np.testing.assert_allclose(va, rb[key], rtol=rtol, atol=1e-12, err_msg=key)
            else:
                assert va == rb[key], key


RELU = {"model": "relu", "sigma": "linear", "latent_dim": 2, "hidden": 6, "batch_size": 32,
        "lr": 3e-3, "dtype": "float64", "tol": 0.0, "check_every": 10, "eval_samples": 4}


def test_members_together_equal_separate_runs_adam(data):
    together = sweep(data, betas=[0.3, 2.0], seeds=[0, 5], steps=40, **RELU)
    assert together.members == [(0.3, 0), (0.3, 5), (2.0, 0), (2.0, 5)]
    for i, (b, s) in enumerate(together.members):
        alone = sweep(data, betas=[b], seeds=[s], steps=40, **RELU)
        torch.testing.assert_close(together.model.flat[i], alone.model.flat[0],
                                   rtol=1e-10, atol=1e-12)


def test_members_together_equal_separate_runs_lbfgs(data):
    kw = {"optimizer": "lbfgs", "dtype": "float64", "latent_dim": 3, "steps": 25, "tol": 0.0}
    together = sweep(data, betas=[0.2, 1.0, 4.0], **kw)
    for i, b in enumerate([0.2, 1.0, 4.0]):
        alone = sweep(data, betas=[b], **kw)
        torch.testing.assert_close(together.model.flat[i], alone.model.flat[0],
                                   rtol=1e-8, atol=1e-10)


def test_masked_adam_leaves_inactive_rows_untouched():
    p = torch.randn(3, 7, dtype=torch.float64)
    opt = MaskedAdam(p, lr=0.1)
    active = torch.tensor([True, True, True])
    for _ in range(3):
        opt.step(torch.randn(3, 7, dtype=torch.float64), active)
    frozen = p[1].clone()
    active = torch.tensor([True, False, True])
    before0 = p[0].clone()
    for _ in range(5):  # momentum is non-zero: a zeroed gradient would still move row 1
        opt.step(torch.zeros(3, 7, dtype=torch.float64), active)
    assert torch.equal(p[1], frozen)
    assert not torch.equal(p[0], before0)
    nan_grad = torch.randn(3, 7, dtype=torch.float64)
    nan_grad[1] = float("nan")
    opt.step(nan_grad, active)
    assert torch.equal(p[1], frozen) and torch.isfinite(p).all()


def test_a_converged_member_stops_moving(data):
    kw = {"dtype": "float64", "latent_dim": 2, "lr": 0.02, "check_every": 10,
          "optimizer": "adam"}
    res = sweep(data, betas=[0.05, 50.0], steps=3000, tol=1e-7, **kw)
    conv, steps = res.column("converged"), res.column("steps")
    assert conv[1] and steps[1] < 3000  # the fully collapsed member converges early
    # The same member trained for exactly its own step count without stopping ends where
    # the converged member sits: after converging it did not move again.
    alone = sweep(data, betas=[50.0], steps=int(steps[1]), tol=1e-7, **kw)
    torch.testing.assert_close(res.model.flat[1], alone.model.flat[0], rtol=1e-12, atol=1e-14)


def test_a_diverging_member_leaves_the_others_untouched(data):
    kw = {"betas": [0.5, 1.0, 2.0], "steps": 60, **RELU}

    def poison(info):
        if info.step == 20:
            with torch.no_grad():
                info.model.flat[1].fill_(float("inf"))

    clean = sweep(data, **kw)
    hit = sweep(data, callback=poison, **kw)
    assert hit.column("diverged").tolist() == [False, True, False]
    assert hit.rows[1]["steps"] == 20
    for i in (0, 2):
        torch.testing.assert_close(hit.model.flat[i], clean.model.flat[i], rtol=0, atol=0)
    _rows_equal([hit.rows[0], hit.rows[2]], [clean.rows[0], clean.rows[2]])


@pytest.mark.parametrize("opt", ["adam", "lbfgs"])
def test_interrupted_and_resumed_equals_uninterrupted(data, tmp_path, opt):
    if opt == "adam":
        kw = {"betas": [0.5, 2.0], "seeds": [0, 1], "steps": 80, **RELU}
    else:
        kw = {"betas": [0.5, 2.0], "optimizer": "lbfgs", "dtype": "float64", "steps": 30,
              "tol": 0.0, "latent_dim": 3}
    full = sweep(data, out=tmp_path / "full", **kw)

    def interrupt(info):
        if info.step == (40 if opt == "adam" else 12):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the handler checkpoints

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
        sweep(data, out=out, callback=interrupt, **kw)
    assert (out / "checkpoint.pt").exists() and not (out / "results.csv").exists()
    res = sweep(data, out=out, resume=True, **kw)
    _rows_equal(res.rows, full.rows)
    torch.testing.assert_close(res.model.flat, full.model.flat, rtol=0, atol=0)
    assert not (out / "checkpoint.pt").exists()
    again = sweep(data, out=out, resume=True, **kw)  # finished: just reloads
    _rows_equal(again.rows, full.rows)


def test_resume_refuses_a_checkpoint_of_other_settings(data, tmp_path):
    sweep(data, betas=[1.0], steps=20, out=tmp_path, latent_dim=2)
    with pytest.raises(ValueError, match="other settings"):
        sweep(data, betas=[1.0], steps=20, out=tmp_path, latent_dim=2, lr=0.01, resume=True)


def test_outputs_and_load_sweep(data, tmp_path):
    res = sweep(data, betas=[0.5, 3.0], seeds=[0, 1], steps=30, out=tmp_path, latent_dim=2,
                sigma="prior")
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert header[: len(result_columns(2))] == result_columns(2)
    for col in ["beta", "seed", "loss", "rec", "kl", "active_units", "sigma_1", "sigma_2",
                "kl_1", "kl_2", "converged", "diverged", "steps"]:
        assert col in header
    info = json.loads((tmp_path / "sweep.json").read_text())
    assert set(info["theory"]) >= {"zeta", "thresholds", "min_loss", "active_modes"}
    assert len(info["theory"]["min_loss"]) == 2
    back = load_sweep(tmp_path)
    _rows_equal(back.rows, res.rows, rtol=1e-15)
    torch.testing.assert_close(back.model.flat, res.model.flat)
    for r in res.rows:
        np.testing.assert_allclose(r["loss"], r["rec"] + r["beta"] * r["kl"], rtol=1e-5)
        np.testing.assert_allclose(r["kl"], r["kl_1"] + r["kl_2"], rtol=1e-5)
        assert r["sigma_1"] >= r["sigma_2"]


def test_data_forms_and_epochs(data):
    x, y = data
    a = sweep((x, y), betas=[1.0], epochs=2, batch_size=60, latent_dim=2)
    assert a.rows[0]["steps"] == 8  # 240 // 60 = 4 steps per epoch
    plain = sweep((x, None), betas=[1.0], steps=5, latent_dim=2)
    assert plain.data["plain"] and plain.data["d2"] == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"optimizer": "lbfgs", "model": "relu"}, "needs an exact loss"),
     ({"optimizer": "lbfgs", "batch_size": 10}, "full batch"),
     ({"model": "gru"}, "model must be one of"),
     ({"sigma": "full"}, "sigma must be one of"),
     ({"steps": 5, "epochs": 1}, "steps or epochs"),
     ({"betas": [1.0, -2.0]}, r"betas must be finite numbers > 0; betas\[1\] is -2"),
     ({"seeds": 3}, r"range\(3\)"),
     ({"seeds": [1, 1]}, "distinct"),
     ({"loss_path": "moments", "model": "tanh"}, "loss_path 'moments' needs"),
     ({"resume": True}, "needs out")],
)
def test_bad_arguments(data, kwargs, match):
    args = {"betas": [1.0], "steps": 2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        sweep(data, **args)


def _row_without_time(r):
    return {k: v for k, v in r.items() if k != "wall_time"}


@pytest.mark.parametrize("kind", ["relu", "lbfgs"])
def test_a_member_gives_the_same_row_alone_in_a_grid_and_in_a_list(data, kind):
    if kind == "relu":
        kw = {"steps": 40, **RELU}
    else:
        kw = {"optimizer": "lbfgs", "dtype": "float64", "latent_dim": 3, "steps": 25,
              "tol": 0.0}
    grid = sweep(data, betas=[0.3, 2.0], seeds=[0, 5], **kw)
    listed = sweep(data, members=[(2.0, 5), (0.3, 0), (0.7, 5), (0.3, 5)], **kw)
    assert listed.members == [(2.0, 5), (0.3, 0), (0.7, 5), (0.3, 5)]
    assert [r["beta"] for r in listed.rows] == [2.0, 0.3, 0.7, 0.3]
    assert [r["seed"] for r in listed.rows] == [5, 0, 5, 5]
    by_member = {m: r for m, r in zip(grid.members, grid.rows, strict=True)}
    for m in [(2.0, 5), (0.3, 0), (0.3, 5)]:
        _rows_equal([_row_without_time(listed.rows[listed.members.index(m)])], [by_member[m]])
    alone = sweep(data, members=[(0.7, 5)], **kw)
    _rows_equal([_row_without_time(listed.rows[2])], alone.rows)
    alone_grid = sweep(data, betas=[0.7], seeds=[5], **kw)
    _rows_equal([_row_without_time(alone.rows[0])], alone_grid.rows)
    assert listed.config["members"] == [[2.0, 5], [0.3, 0], [0.7, 5], [0.3, 5]]
    assert "members" not in grid.config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"betas": [1.0], "members": [(1.0, 0)]}, "members or betas/seeds, not both"),
     ({"seeds": [0], "members": [(1.0, 0)]}, "members or betas/seeds, not both"),
     ({}, "give betas"),
     ({"members": []}, "members is empty"),
     ({"members": [(1.0, 0), (1.0, 0)]}, r"distinct.*\(1.0, 0\) repeats"),
     ({"members": [(1.0, 0, 2)]}, r"members\[0\] must be a \(beta, seed\) pair"),
     ({"members": [(1.0, 0), (-1.0, 1)]}, r"members\[1\] beta must be finite numbers > 0"),
     ({"members": [(1.0, -1)]}, r"members\[0\] seed must be >= 0")],
)
def test_bad_member_lists(data, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sweep(data, steps=2, **kwargs)
