"""locate: exact tests of the bracketing on stub trainers with known thresholds."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

import postcollapse
from postcollapse._checks import ACTIVE_VAR_THRESHOLD
from postcollapse.locate import (
    THRESHOLD_COLUMNS,
    Observations,
    load_locate,
    locate,
    next_points,
    seed_bracket,
)
from postcollapse.locate.bracket import kpoints
from postcollapse.theory import Moments, spectrum, thresholds

# Data whose predicted thresholds are known: plain VAE on independent columns.
RNG = np.random.default_rng(0)
X = RNG.normal(size=(400, 6)) * np.array([3.0, 2.2, 1.6, 1.1, 0.6, 0.05])
PRED = thresholds(spectrum(Moments.from_arrays(X)))[:5]


class StepTrainer:
    """Active count = #{i : beta < t_i(seed)} with known thresholds, optionally with a dip
    (one unit lost) on a beta window; records the members of every call."""

    def __init__(self, true, *, seed_shift=0.0, dip=None, converged=True):
        self.true = np.asarray(true, dtype=float)
        self.seed_shift, self.dip, self.converged = seed_shift, dip, converged
        self.calls: list[list] = []

    def count(self, beta, seed):
        n = int((self.true * (1 + self.seed_shift * seed) > beta).sum())
        if self.dip is not None and self.dip[0] <= beta <= self.dip[1]:
            n -= 1
        return n

    def __call__(self, data, *, members, **options):
        self.calls.append(list(members))
        rows = [{"beta": b, "seed": s, "active_units": self.count(b, s),
                 "converged": self.converged, "loss": 0.0} for b, s in members]
        return SimpleNamespace(rows=rows)


def _truth(trainer, mode, seed):
    return trainer.true[mode - 1] * (1 + trainer.seed_shift * seed)


def test_brackets_contain_the_true_thresholds_to_rtol():
    true = PRED * np.array([1.02, 0.97, 1.0, 1.04, 0.96])
    tr = StepTrainer(true, seed_shift=0.01)
    res = locate((X, None), latent_dim=5, seeds=[0, 1, 2], trainer=tr, rtol=0.01)
    assert res.done
    for m in res.modes:
        for ps in m.per_seed:
            t = _truth(tr, m.mode, ps["seed"])
            assert ps["lower"] < t <= ps["upper"]
            assert ps["upper"] / ps["lower"] - 1 <= 0.01 * (1 + 1e-9)
        mids = sorted(0.5 * (p["lower"] + p["upper"]) for p in m.per_seed)
        assert m.observed == pytest.approx(mids[1], rel=1e-12)
        assert m.lower == min(p["lower"] for p in m.per_seed)
        assert m.upper == max(p["upper"] for p in m.per_seed)
        assert m.rel_error == pytest.approx(m.observed / m.predicted - 1, rel=1e-12)
        assert m.predicted == pytest.approx(PRED[m.mode - 1], rel=1e-12)
        assert m.seeds == 3 and m.converged_fraction == 1.0 and m.monotone


def test_every_round_is_one_training_of_new_members():
    tr = StepTrainer(PRED * 1.01)
    res = locate((X, None), latent_dim=5, seeds=[0, 1], trainer=tr)
    assert len(tr.calls) == len(res.rounds)
    seen = [m for call in tr.calls for m in call]
    assert len(seen) == len(set(seen)) == res.members_trained


def test_inside_the_first_bracket_takes_two_rounds():
    # [p/1.05, 1.05 p] cut in 5 parts, then in 2: 1.1025 ** 0.1 - 1 < 0.01.
    tr = StepTrainer(PRED * np.array([1.013, 0.977, 1.031, 0.99, 1.002]))
    res = locate((X, None), latent_dim=5, trainer=tr)
    assert res.done and len(res.rounds) == 2
    # 6 betas per mode and the scout grid of 8 in the first round
    assert len(tr.calls[0]) == 5 * 6 + 8
    # a first bracket as narrow as rtol: one round, 3 betas per mode
    tr = StepTrainer(PRED * np.array([1.004, 0.996, 1.009, 0.992, 1.0]))
    res = locate((X, None), latent_dim=5, trainer=tr, start_width=0.01)
    assert res.done and len(res.rounds) == 1 and res.members_trained == 5 * 3 + 8


def test_scout_grid_brackets_far_modes_in_the_first_round():
    true = PRED * np.array([1.0, 1.0, 1.0, 1.0, 0.2])  # mode 5 far below every prediction
    for scout in (0, 8):
        tr = StepTrainer(true)
        res = locate((X, None), latent_dim=5, trainer=tr, scout=scout, max_rounds=1)
        status = [ps["status"] for m in res.modes for ps in m.per_seed]
        # the scout grid spans PRED[-1] / 10 .. 2 PRED[0]: every mode has a bracket
        assert status.count("bracketed") == (5 if scout else 4), status
        for m in res.modes:
            if m.seeds:
                assert m.lower < true[m.mode - 1] <= m.upper
        if scout:  # the first round holds the 8 log-spaced betas PRED[-1]/10 .. 2 PRED[0]
            first = sorted(b for b, _ in tr.calls[0])
            assert first[0] == pytest.approx(PRED[4] / 10)
            assert first[-1] == pytest.approx(2 * PRED[0])
        res = locate((X, None), latent_dim=5, trainer=StepTrainer(true), scout=scout)
        assert res.done
        for m in res.modes:
            assert m.lower < true[m.mode - 1] <= m.upper and m.width <= 0.01 * (1 + 1e-9)
    with pytest.raises(ValueError, match="scout must be"):
        locate((X, None), trainer=StepTrainer(true), scout=-1)


@pytest.mark.parametrize("factor", [3.0, 1 / 3.0, 40.0, 1 / 40.0])
def test_widens_when_the_observation_lies_outside(factor):
    true = PRED * factor
    tr = StepTrainer(true)
    res = locate((X, None), latent_dim=5, trainer=tr)
    assert res.done and len(res.rounds) > 2
    for m in res.modes:
        assert m.lower < true[m.mode - 1] <= m.upper and m.width <= 0.01 * (1 + 1e-9)


def test_a_mode_that_never_appears_is_reported_not_hidden():
    true = np.concatenate([PRED[:4], [0.0]])  # mode 5 is lost at every beta
    tr = StepTrainer(true)
    res = locate((X, None), latent_dim=5, trainer=tr, max_factor=10.0)
    assert res.done
    m5 = res.modes[4]
    assert math.isnan(m5.observed) and m5.seeds == 0
    assert "no beta down to" in m5.note
    assert min(b for call in tr.calls for b, _ in call) == pytest.approx(PRED[4] / 10)
    assert all(m.seeds == 1 for m in res.modes[:4])


def test_non_monotone_count_is_flagged():
    # Mode 2 at 1.02 p2, but the count dips to 1 on [0.985, 0.995] p2 (holds the first-round
    # point p2 / 1.01).
    p2 = PRED[1]
    tr = StepTrainer(PRED * np.array([1, 1.02, 1, 1, 1]), dip=(0.985 * p2, 0.995 * p2))
    res = locate((X, None), latent_dim=5, trainer=tr)
    m2 = res.modes[1]
    assert not m2.monotone and "not monotone" in m2.note
    assert m2.lower < 1.02 * p2 <= m2.upper
    assert all(m.monotone for m in res.modes if m.mode != 2)
    row = next(r for r in csv.DictReader(open_text(res.to_csv())) if r["mode"] == "2")
    assert row["monotone"] == "False"


def open_text(text):
    import io

    return io.StringIO(text)


def test_files_csv_and_json(tmp_path):
    tr = StepTrainer(PRED * 1.02)
    res = locate((X, None), latent_dim=5, seeds=[0, 1], trainer=tr, out=tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "thresholds.csv")))
    assert tuple(rows[0])[: len(THRESHOLD_COLUMNS)] == THRESHOLD_COLUMNS
    assert [int(r["mode"]) for r in rows] == [1, 2, 3, 4, 5]
    for r, m in zip(rows, res.modes, strict=True):
        assert float(r["observed"]) == m.observed and int(r["seeds"]) == 2
    obj = json.loads((tmp_path / "locate.json").read_text())
    assert obj["done"] and obj["config"]["rtol"] == 0.01 and obj["config"]["seeds"] == [0, 1]
    assert obj["data"]["d0"] == 6 and len(obj["rounds"]) == len(tr.calls)
    assert [(m["beta"], m["seed"]) for m in obj["rounds"][0]["members"]] == \
        [tuple(x) for x in tr.calls[0]]
    again = load_locate(tmp_path)
    assert [m.observed for m in again.modes] == [m.observed for m in res.modes]
    assert res.modes_json()["modes"][0].keys() >= {"mode", "predicted", "observed", "lower",
                                                   "upper", "rel_error"}


def test_resume_continues_from_the_last_round(tmp_path):
    true = PRED * np.array([1.3, 0.8, 1.1, 0.7, 1.5])
    full = locate((X, None), latent_dim=5, trainer=StepTrainer(true))
    first = StepTrainer(true)
    part = locate((X, None), latent_dim=5, trainer=first, out=tmp_path, max_rounds=2)
    assert not part.done and len(first.calls) == 2
    rest = StepTrainer(true)
    res = locate((X, None), latent_dim=5, trainer=rest, out=tmp_path, resume=True)
    assert res.done and len(rest.calls) == len(full.rounds) - 2
    assert [m.observed for m in res.modes] == [m.observed for m in full.modes]
    assert rest.calls[0] == [tuple(m) for m in _members(full.rounds[2])]
    # A finished run resumes without training.
    idle = StepTrainer(true)
    locate((X, None), latent_dim=5, trainer=idle, out=tmp_path, resume=True)
    assert idle.calls == []


def _members(rnd):
    return [(m["beta"], m["seed"]) for m in rnd["members"]]


def test_resume_with_other_options_is_refused(tmp_path):
    locate((X, None), latent_dim=5, trainer=StepTrainer(PRED), out=tmp_path, max_rounds=1)
    with pytest.raises(ValueError, match="other options or data"):
        locate((X, None), latent_dim=5, trainer=StepTrainer(PRED), out=tmp_path, resume=True,
               rtol=0.02, max_rounds=1)


def test_converged_fraction_counts_bracket_ends():
    res = locate((X, None), latent_dim=2, trainer=StepTrainer(PRED, converged=False))
    assert all(m.converged_fraction == 0.0 for m in res.modes)


def test_modes_subset_and_package_is_callable():
    tr = StepTrainer(PRED)
    res = postcollapse.locate((X, None), latent_dim=5, modes=[1, 3], trainer=tr)
    assert [m.mode for m in res.modes] == [1, 3]


@pytest.mark.parametrize("kwargs, match", [
    ({"rtol": 1.5}, "rtol must be below 1"),
    ({"rtol": -0.1}, "rtol"),
    ({"seeds": 3}, "seeds must be a sequence"),
    ({"seeds": [0, 0]}, "distinct"),
    ({"betas": [1.0]}, "chooses 'betas' itself"),
    ({"resume": True}, "resume=True needs out"),
    ({"modes": [6]}, "modes must be between 1 and 5"),
    ({"max_points": 0}, "max_points"),
])
def test_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        locate((X, None), latent_dim=5, trainer=StepTrainer(PRED), **kwargs)


def test_no_signal_is_an_error():
    with pytest.raises(ValueError, match="no signal"):
        locate((np.ones((10, 3)), None), trainer=StepTrainer([1.0]))


# ---------------------------------------------------------------- the pure state machine
def test_kpoints_are_geometric_and_just_enough():
    pts = kpoints(1.0, 1.1025, rtol=0.01, max_points=4)
    ratios = np.diff(np.log([1.0, *pts, 1.1025]))
    assert len(pts) == 4 and np.allclose(ratios, ratios[0])
    assert len(kpoints(1.0, 1.0197, rtol=0.01, max_points=4)) == 1
    assert len(kpoints(1.0, 1.035, rtol=0.01, max_points=4)) == 3


def test_seed_bracket_states():
    obs = Observations()
    assert seed_bracket(obs, 1, 0).status == "empty"
    for b, n in [(1.0, 2), (2.0, 1), (3.0, 0)]:
        obs.add(b, 0, n)
    br = seed_bracket(obs, 1, 0)
    assert (br.status, br.lower, br.upper, br.monotone) == ("bracketed", 2.0, 3.0, True)
    assert seed_bracket(obs, 3, 0).status == "below"
    obs.add(0.5, 1, 3)
    assert seed_bracket(obs, 2, 1).status == "above"
    pts, why = next_points(seed_bracket(obs, 3, 0), 1.0, start_width=0.05, rtol=0.01,
                           max_points=4, max_factor=1000.0)
    # Lowest observation 1.0 = p: the probes span [1 / 1.05**2, 1) in 4 geometric steps.
    assert why is None and len(pts) == 4
    assert min(pts) == pytest.approx(1 / 1.1025, rel=1e-12) and max(pts) < 1.0
    obs.add(1 / 1.1025, 0, 2)
    obs.add(1 / 1.1025**3, 0, 2)  # both far below: the next probes go lower still
    pts, _ = next_points(seed_bracket(obs, 3, 0), 1.0, start_width=0.05, rtol=0.01,
                         max_points=4, max_factor=1000.0)
    assert min(pts) < 1 / 1.1025**3 / 1.1
    obs.add(1e-3, 0, 2)
    assert next_points(seed_bracket(obs, 3, 0), 1.0, start_width=0.05, rtol=0.01,
                       max_points=4, max_factor=1000.0) == ([], "no beta down to 0.001 keeps "
                                                            "mode 3")


def test_locate_figure_plots_every_located_mode():
    from matplotlib.figure import Figure

    from postcollapse.figures import locate_figure

    a = locate((X, None), latent_dim=5, trainer=StepTrainer(PRED * 1.1)).modes
    b = locate((X, None), latent_dim=5, trainer=StepTrainer(np.r_[PRED[:4], 0.0]),
               max_factor=4.0).modes
    fig = locate_figure({"a": a, "b": b}, title="t")
    assert isinstance(fig, Figure)
    ax, ax_rel = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    labels = ax.get_legend_handles_labels()[1]
    assert labels[1:] == ["a", "b"]
    # Relative errors in percent: 5 points for a (about +10%), 4 for b (mode 5 unlocated).
    lines = {ln.get_marker(): ln for ln in ax_rel.get_lines() if ln.get_marker() in "os"}
    assert len(lines["o"].get_xdata()) == 5 and len(lines["s"].get_xdata()) == 4
    assert np.allclose(lines["o"].get_ydata(), 10.0, atol=0.6)
    assert np.allclose(lines["s"].get_ydata(), 0.0, atol=0.6)


def test_active_threshold_reaches_the_trainer_and_the_record(tmp_path):
    seen = []

    def trainer(data, *, members, **options):
        seen.append(options["active_threshold"])
        return StepTrainer(PRED)(data, members=members)

    # default: 1e-3 for L-BFGS on an exact loss (the linear model, full batch) ...
    res = locate((X, None), latent_dim=5, trainer=trainer, out=tmp_path)
    assert set(seen) == {postcollapse.locate.LOCATE_ACTIVE_THRESHOLD} == {1e-3}
    assert res.config["active_threshold"] == 1e-3
    # ... else the sweep's rule (Adam: minibatches, or a sampled loss)
    for opts in ({"batch_size": 100}, {"model": "relu"}, {"optimizer": "adam"}):
        locate((X, None), latent_dim=5, trainer=trainer, **opts)
        assert seen[-1] == ACTIVE_VAR_THRESHOLD == 0.01, opts
    res = locate((X, None), latent_dim=5, trainer=trainer, active_threshold=0.02)
    assert seen[-1] == 0.02
    with pytest.raises(ValueError, match="active_threshold must be"):
        locate((X, None), trainer=trainer, active_threshold=-1.0)
    with pytest.raises(ValueError, match="holds a locate run with other options"):
        locate((X, None), latent_dim=5, trainer=trainer, out=tmp_path, resume=True,
               active_threshold=0.02)
