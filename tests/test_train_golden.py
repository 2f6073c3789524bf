"""Behaviour preservation: two small fixed-seed CPU sweeps reproduce recorded results.csv rows.

The expected rows in tests/data/golden_sweep_*.csv were written by an earlier version of the
trainer (run this file as a script to rewrite them, e.g. after a deliberate change of the
numbers). Every numeric column must agree to 1e-12 relative; ``wall_time`` is a clock reading
and is left out. The cases pin the options of the recorded behaviour (Adam at a fixed learning
rate, L-BFGS without block scaling) where the defaults have moved on.
"""

import csv
import math
import sys
from pathlib import Path

import pytest

from postcollapse.data import synthetic
from postcollapse.train import sweep

DATA = Path(__file__).parent / "data"
TIME_COLUMNS = {"wall_time"}

CASES = {
    "adam": {"betas": [0.3, 1.0, 3.0], "seeds": [0, 1], "model": "relu", "sigma": "linear",
             "latent_dim": 2, "hidden": 6, "steps": 300, "batch_size": 64, "lr": 3e-3,
             "optimizer": "adam", "dtype": "float64", "check_every": 50, "eval_samples": 4,
             "device": "cpu", "lr_decay": None},
    "lbfgs": {"betas": [0.2, 1.0, 4.0], "model": "linear", "sigma": "learnable",
              "latent_dim": 3, "steps": 40, "optimizer": "lbfgs", "dtype": "float64",
              "device": "cpu", "block_scaling": False},
}


def _data():
    return synthetic(n_samples=240, d0=4, d2=3, seed=1)


def _run(name: str, out: Path) -> Path:
    sweep(_data(), out=out, **CASES[name])
    return out / "results.csv"


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _number(text: str):
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text


@pytest.mark.parametrize("name", sorted(CASES))
def test_sweep_reproduces_recorded_rows(name, tmp_path):
    expected = _read(DATA / f"golden_sweep_{name}.csv")
    got = _read(_run(name, tmp_path))
    assert len(got) == len(expected)
    assert list(got[0]) == list(expected[0])
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        for col, ev in e.items():
            if col in TIME_COLUMNS:
                continue
            a, b = _number(g[col]), _number(ev)
            if isinstance(b, str):
                assert a == b, (i, col, g[col], ev)
                continue
            if isinstance(b, bool) or (math.isnan(b) and math.isnan(a)):
                assert a == b or math.isnan(b), (i, col, g[col], ev)
                continue
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0), (i, col, g[col], ev)


if __name__ == "__main__":  # rewrite the recorded rows from the current code
    import shutil
    import tempfile

    for case in sys.argv[1:] or sorted(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(_run(case, Path(tmp)), DATA / f"golden_sweep_{case}.csv")
