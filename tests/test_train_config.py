"""SweepConfig (validation, derived defaults), the trainer registry, results parsing, hooks."""

import dataclasses
import inspect
import subprocess
import sys

import numpy as np
import pytest

from postcollapse.data import synthetic
from postcollapse.train import (
    OPTIMIZERS,
    TRAINERS,
    CheckInfo,
    SweepConfig,
    parse_cell,
    parse_flag,
    run_sweep,
    sweep,
)


def test_sweep_signature_defaults_are_the_config_defaults():
    params = inspect.signature(sweep).parameters
    fields = {f.name: f for f in dataclasses.fields(SweepConfig) if f.init}
    options = {n for n in params if n not in ("data", "callback")}
    assert options == set(fields) - {"n_rows"}
    for name in options - {"betas"}:
        assert params[name].default == fields[name].default, name


def test_trainer_registry_covers_the_optimizer_choices():
    assert tuple(TRAINERS) == OPTIMIZERS


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"optimizer": "sgd"}, "optimizer must be one of auto, adam, lbfgs; got 'sgd'"),
     ({"sigma": "diag"}, "sigma must be one of prior, learnable, linear, mlp"),
     ({"loss_path": "rows"}, "loss_path must be one of"),
     ({"dtype": "float16"}, "dtype must be 'auto', 'float32' or 'float64'"),
     ({"betas": []}, "betas is empty"),
     ({"tol": -1.0}, "tol must be a finite number >= 0"),
     ({"precondition": True, "optimizer": "adam"}, "precondition needs optimizer 'lbfgs'"),
     ({"precondition": True, "model": "relu"}, "precondition needs optimizer 'lbfgs'"),
     ({"lr_decay": 1.0}, r"lr_decay must be in \(0, 1\)"),
     ({"patience": 0}, "patience must be >= 1"),
     ({"min_lr": 0.0}, "min_lr must be"),
     ({"crn_samples": 0}, "crn_samples must be >= 1"),
     ({"batch_size": 0}, "batch_size must be >= 1")],
)
def test_config_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SweepConfig(**{"betas": [1.0], **kwargs})


def test_config_derives_defaults_once():
    adam = SweepConfig(betas=[1.0], optimizer="adam")
    assert (adam.tol, adam.check_every, adam.precondition) == (1e-6, 100, False)
    lb32 = SweepConfig(betas=[1.0], optimizer="lbfgs", dtype="float32")
    lb64 = SweepConfig(betas=[1.0], optimizer="lbfgs", dtype="double")
    assert (lb32.tol, lb64.tol, lb64.dtype) == (1e-7, 1e-12, "float64")
    assert lb32.check_every == 1 and lb32.precondition
    assert SweepConfig(betas=[1.0], model="relu-linear").encoder == "relu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        adam.lr = 0.1


def test_for_rows_fixes_batch_steps_and_loss_path():
    big_batch = SweepConfig(betas=[1.0], batch_size=500, optimizer="adam").for_rows(100)
    assert big_batch.batch_size is None and big_batch.steps == 20000
    assert big_batch.loss_path == "moments" and big_batch.n_rows == 100
    mini = SweepConfig(betas=[1.0], batch_size=30, epochs=2, optimizer="adam").for_rows(100)
    assert (mini.batch_size, mini.steps, mini.loss_path) == (30, 6, "data")
    assert SweepConfig(betas=[1.0], optimizer="lbfgs").for_rows(100).steps == 2000
    with pytest.raises(ValueError, match="needs an exact loss"):
        SweepConfig(betas=[1.0], optimizer="lbfgs", batch_size=10).for_rows(100)


def test_auto_optimizer_and_dtype_follow_the_loss_and_the_batch():
    def resolved(n_rows=None, **kw):
        c = SweepConfig(betas=[1.0], **kw)
        c = c if n_rows is None else c.for_rows(n_rows)
        return c.optimizer, c.dtype

    assert resolved() == ("lbfgs", "float64")  # linear decoder, full batch: exact loss
    assert resolved(sigma="linear") == ("lbfgs", "float64")
    assert resolved(model="relu-linear") == ("lbfgs", "float64")
    assert resolved(model="relu") == ("adam", "float32")  # sampled loss
    assert resolved(model="linear-tanh") == ("adam", "float32")
    assert resolved(batch_size=50) == ("auto", "auto")  # full batch only if n_rows <= 50
    assert resolved(100, batch_size=50) == ("adam", "float32")
    assert resolved(40, batch_size=50) == ("lbfgs", "float64")
    assert resolved(dtype="float32") == ("lbfgs", "float32")
    assert resolved(optimizer="adam") == ("adam", "float32")
    auto = SweepConfig(betas=[1.0], batch_size=50)
    assert auto.for_rows(40).tol == 1e-12 and auto.for_rows(100).tol == 1e-6
    assert auto.for_rows(40).precondition and not auto.for_rows(100).precondition
    assert auto.for_rows(40).record("d")["optimizer"] == "lbfgs"


def test_parse_cell_and_parse_flag():
    assert [parse_cell(t) for t in ("True", "3", "0.25", "nan", "x")][:3] == [True, 3, 0.25]
    assert np.isnan(parse_cell("nan")) and parse_cell("x") == "x"
    assert [parse_flag(v) for v in ("True", " false ", "1", "0", "yes", True, 0, 2.0)] == [
        True, False, True, False, True, True, False, True]


def test_run_sweep_with_a_config_equals_sweep_with_options():
    data = synthetic(n_samples=120, d0=4, d2=3, seed=2)
    kw = {"betas": [0.5, 2.0], "seeds": [0, 1], "steps": 30, "latent_dim": 2,
          "dtype": "float64", "batch_size": 40, "device": "cpu", "optimizer": "adam"}
    seen = []
    a = sweep(data, callback=seen.append, check_every=10, **kw)
    b = run_sweep(data, SweepConfig(check_every=10, **kw))
    assert [{k: v for k, v in r.items() if k != "wall_time"} for r in a.rows] == [
        {k: v for k, v in r.items() if k != "wall_time"} for r in b.rows]
    assert all(isinstance(i, CheckInfo) for i in seen)
    assert [i.step for i in seen] == [10, 20, 30] and seen[-1].steps == 30
    assert seen[-1].loss.shape == (4,) and seen[-1].active == 4


def test_choice_lists_import_without_torch():
    code = ("import sys; from postcollapse.train import OPTIMIZERS, SweepConfig; "
            "from postcollapse.models import SIGMA_KINDS; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
