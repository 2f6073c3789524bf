"""locate for every model family: options reach the trainer, the observed count is the
family's, the predictions are the family's theory (stub trainers, no training)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from postcollapse.locate import locate
from postcollapse.theory import Moments, spectrum, thresholds
from postcollapse.theory.critical import freebits_thresholds, hierarchical_thresholds
from test_locate import StepTrainer

RNG = np.random.default_rng(1)
# A conditional problem (y = x A + noise): the learned-variance NLL is bounded.
X = RNG.normal(size=(400, 4)) * np.array([3.0, 2.0, 1.2, 0.6])
Y = X @ np.diag([1.0, 0.9, 0.8, 0.7]) + 0.3 * RNG.normal(size=(400, 4))
SPEC = spectrum(Moments.from_arrays(X, Y))


class KeyTrainer(StepTrainer):
    """A StepTrainer whose count is under ``key`` (and ``active_units`` = every latent)."""

    def __init__(self, true, key, **kw):
        super().__init__(true, **kw)
        self.key, self.options = key, []

    def __call__(self, data, *, members, **options):
        self.options.append(options)
        rows = [{"beta": b, "seed": s, "active_units": 99, self.key: self.count(b, s),
                 "converged": True, "loss": 0.0} for b, s in members]
        return SimpleNamespace(rows=rows)


def _check_brackets(res, true):
    assert res.done
    for m in res.modes:
        assert m.lower < true[m.mode - 1] <= m.upper and m.width <= 0.01 * (1 + 1e-9)


def test_learned_eta_dec_predicts_the_learned_variance_thresholds(tmp_path):
    pred = thresholds(SPEC, eta_dec="learn")[:3]
    assert not np.allclose(pred, thresholds(SPEC)[:3], rtol=0.05)  # they differ
    tr = KeyTrainer(pred * 1.01, "active_units")
    res = locate((X, Y), latent_dim=3, eta_dec="learn", trainer=tr, out=tmp_path)
    np.testing.assert_allclose([m.predicted for m in res.modes], pred, rtol=1e-12)
    _check_brackets(res, pred * 1.01)
    assert {o["eta_dec"] for o in tr.options} == {"learn"}
    cfg = json.loads((tmp_path / "locate.json").read_text())["config"]
    assert (cfg["eta_dec"], cfg["family"], cfg["observe"]) == ("learn", "one level",
                                                               "active_units")


def test_two_levels_locate_level1_against_beta():
    pred = hierarchical_thresholds(SPEC, latent_dim=4, latent_dim2=4, beta2=4.0, sigma1=0.8)
    assert np.isinf(pred[0]) and np.all(np.isfinite(pred[1:]))  # zeta_1^2 > beta2
    tr = KeyTrainer(np.where(np.isinf(pred), 1e9, pred * 0.98), "active_level1")
    res = locate((X, Y), latent_dim=4, levels=2, beta2=4.0, sigma1=0.8, trainer=tr)
    assert [m.mode for m in res.modes] == [2, 3, 4]  # mode 1 never collapses
    np.testing.assert_allclose([m.predicted for m in res.modes], pred[1:], rtol=1e-12)
    _check_brackets(res, tr.true)
    opts = tr.options[0]
    assert (opts["levels"], opts["beta2"], opts["sigma1"], opts["latent_dim2"]) == \
        (2, 4.0, 0.8, None)
    assert res.config["observe"] == "active_level1" and res.config["family"] == "two levels"
    with pytest.raises(ValueError, match=r"mode 1 never collapses in the two levels model"):
        locate((X, Y), latent_dim=4, levels=2, beta2=4.0, sigma1=0.8, trainer=tr, modes=[1])


def test_two_levels_with_both_variances_learnable_keep_below_beta2():
    pred = hierarchical_thresholds(SPEC, latent_dim=4, latent_dim2=2, beta2=3.0)
    np.testing.assert_array_equal(np.isinf(pred), SPEC.zeta[:4] ** 2 >= 3.0)
    tr = KeyTrainer(np.where(np.isinf(pred), 1e9, pred), "active_level1")
    res = locate((X, Y), latent_dim=4, levels=2, beta2=3.0, latent_dim2=2, trainer=tr)
    assert [m.mode for m in res.modes] == [i + 1 for i in range(4) if np.isfinite(pred[i])]
    assert tr.options[0]["latent_dim2"] == 2 and tr.options[0]["sigma1"] is None


@pytest.mark.slow
def test_free_bits_locate_where_modes_stop_receiving_signal():
    pred = freebits_thresholds(SPEC, latent_dim=4, lam=0.1, rtol=1e-6)
    finite = [i + 1 for i in range(4) if np.isfinite(pred[i])]
    assert finite  # the weakest modes lose their signal at a finite beta
    true = np.where(np.isinf(pred), 1e9, pred * 1.015)
    tr = KeyTrainer(true, "active_modes")
    res = locate((X, Y), latent_dim=4, free_bits=0.1, trainer=tr)
    assert [m.mode for m in res.modes] == finite
    np.testing.assert_allclose([m.predicted for m in res.modes], pred[np.isfinite(pred)],
                               rtol=1e-5)
    _check_brackets(res, true)  # active_units (99: every latent) is not what is read
    assert tr.options[0]["free_bits"] == 0.1 and tr.options[0]["free_bits_mode"] == "dataset"
    assert res.config["observe"] == "active_modes" and res.config["free_bits"] == 0.1


@pytest.mark.parametrize("kwargs, match", [
    ({"beta2": 2.0}, "beta2 needs levels=2"),
    ({"levels": 2}, "levels=2 needs beta2"),
    ({"levels": 2, "beta2": 2.0, "free_bits": 0.1}, "free_bits is for the one-level VAE"),
    ({"free_bits_mode": "batch"}, "free_bits_mode needs free_bits"),
    ({"free_bits": 0.1, "eta_dec": "learn"}, "eta_dec 'learn' is for the one-level VAE"),
    ({"eta_dec": "wide"}, "eta_dec must be a number > 0 or 'learn'"),
])
def test_bad_family_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        locate((X, Y), latent_dim=3, trainer=StepTrainer([1.0]), **kwargs)


def test_a_trainer_without_the_family_count_is_an_error():
    with pytest.raises(ValueError, match="rows have no 'active_level1'"):
        locate((X, Y), latent_dim=4, levels=2, beta2=4.0, sigma1=0.8,
               trainer=StepTrainer([1e9, 5, 3, 1]))


def test_nothing_to_locate_when_no_mode_collapses():
    with pytest.raises(ValueError, match="no mode collapses at a finite beta"):
        locate((X, Y), latent_dim=1, levels=2, beta2=0.5, sigma1=0.8,
               trainer=StepTrainer([1.0]))
    assert math.isinf(hierarchical_thresholds(SPEC, latent_dim=1, latent_dim2=1, beta2=0.5,
                                              sigma1=0.8)[0])
