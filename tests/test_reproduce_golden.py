"""Behaviour preservation: a tiny fixed-seed reproduction writes the recorded numbers.

The expected files under ``tests/data/`` were written by the reproduction of the hidden
``test`` preset (CPU, one torch thread, seed 0) before the reproduction code was split into
a package. The test reruns the same figures and compares every numeric column to 1e-12
relative (wall-time columns excluded; flags compared as text). Regenerate them only for a
deliberate change of behaviour: run ``reproduce(FIG, out=..., preset="test", device="cpu")``
with ``torch.set_num_threads(1)`` and copy ``FIG/sweep/results.csv`` and ``FIG/FIG.csv``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
TIME_COLUMNS = {"wall_time"}
# Columns added after the files were recorded: text, empty for these healthy members.
NEW_TEXT_COLUMNS = {"fault"}


def _read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _assert_same_rows(got_path: Path, want_path: Path) -> None:
    got_cols, got = _read(got_path)
    want_cols, want = _read(want_path)
    new = [c for c in got_cols if c in NEW_TEXT_COLUMNS and c not in want_cols]
    assert [c for c in got_cols if c not in new] == want_cols, got_path.name
    assert all(g[c] == "" for g in got for c in new), got_path.name
    assert len(got) == len(want), got_path.name
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        for col in want_cols:
            if col in TIME_COLUMNS:
                continue
            gv, wv = _number(g[col]), _number(w[col])
            where = f"{got_path.name} row {i} column {col}: got {g[col]}, want {w[col]}"
            if wv is None or gv is None:
                assert g[col] == w[col], where
            elif math.isnan(wv):
                assert math.isnan(gv), where
            else:
                assert gv == pytest.approx(wv, rel=1e-12, abs=0.0), where


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("fig", [
    "fig4",  # linear model, L-BFGS in float64
    pytest.param("fig1", marks=pytest.mark.slow),  # ReLU MLP, Adam in float32
])
def test_test_preset_reproduces_recorded_results(fig, tmp_path, one_thread):
    from postcollapse.reproduce import reproduce

    reproduce(fig, out=tmp_path, preset="test", device="cpu")
    _assert_same_rows(tmp_path / fig / "sweep" / "results.csv",
                      DATA / f"golden_reproduce_{fig}_results.csv")
    _assert_same_rows(tmp_path / fig / f"{fig}.csv", DATA / f"golden_reproduce_{fig}.csv")
