"""`postcollapse thresholds/optimum --eta-dec learn` and `thresholds --keep K`: values against
the closed form computed here from the reported spectrum, and one line on stderr + exit
status 2 for bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest

from clirun import run_error, run_json
from postcollapse.cli import main


def _learned_thresholds(zeta2, r, d2):
    """beta_i* = d2 zeta_i^2 / (r + sum_{j>=i} zeta_j^2 + (i-1) zeta_i^2), written out."""
    z2 = np.asarray(zeta2)
    return np.array([d2 * z2[i] / (r + z2[i:].sum() + i * z2[i]) for i in range(z2.size)])


def test_thresholds_learn_json(capsys):
    out = run_json(capsys, ["thresholds", "synthetic", "--eta-dec", "learn", "--json"])
    assert out["eta_dec"] == "learn"
    want = _learned_thresholds(out["zeta2"], out["residual"], out["d2"])
    np.testing.assert_allclose(out["beta_thresholds"], want, rtol=1e-12)
    # Complete collapse exactly at beta_1*: one mode survives just below, none just above.
    b1 = out["beta_thresholds"][0]
    base = ["optimum", "synthetic", "--eta-dec", "learn", "--latent-dim", "2", "--json"]
    below = run_json(capsys, [*base, "--beta", repr(b1 * (1 - 1e-9))])
    above = run_json(capsys, [*base, "--beta", repr(b1 * (1 + 1e-9))])
    assert below["active_modes"] == 1 and above["active_modes"] == 0


def test_optimum_learn_json_v_and_nll(capsys):
    th = run_json(capsys, ["thresholds", "synthetic", "--json"])
    z2, r, d2 = np.array(th["zeta2"]), th["residual"], th["d2"]
    for beta in (1.5, 2.0, 3.0):
        out = run_json(capsys, ["optimum", "synthetic", "--eta-dec", "learn", "--beta",
                                str(beta), "--latent-dim", "3", "--json"])
        k = out["active_modes"]
        assert out["eta_dec_learned"] is True
        v = (r + z2[k:].sum()) / (d2 - k * beta)  # v_k, every mode past k
        np.testing.assert_allclose(out["eta_dec2"], v, rtol=1e-12)
        np.testing.assert_allclose(out["eta_dec"] ** 2, v, rtol=1e-12)
        np.testing.assert_allclose(
            out["nll"], out["loss"] + d2 / 2 * np.log(2 * np.pi * v), rtol=1e-12)
    # A fixed eta_dec reports the NLL too (same constant), and eta_dec2 = eta_dec^2.
    out = run_json(capsys, ["optimum", "synthetic", "--eta-dec", "0.5", "--beta", "2",
                            "--latent-dim", "3", "--json"])
    assert out["eta_dec_learned"] is False and out["eta_dec2"] == 0.25
    np.testing.assert_allclose(out["nll"], out["loss"] + d2 / 2 * np.log(2 * np.pi * 0.25),
                               rtol=1e-12)


def test_optimum_learn_text(capsys):
    assert main(["optimum", "synthetic", "--eta-dec", "learn", "--beta", "2",
                 "--latent-dim", "2"]) == 0
    out = capsys.readouterr().out
    assert "(learned: eta_dec^2 = 5.1" in out and "<- minimised" in out


@pytest.mark.parametrize("eta_dec", ["1", "0.5", "learn"])
def test_thresholds_keep_interval(capsys, eta_dec):
    th = run_json(capsys, ["thresholds", "synthetic", "--eta-dec", eta_dec, "--json"])
    t = th["beta_thresholds"]
    for keep in range(0, len(t)):
        out = run_json(capsys, ["thresholds", "synthetic", "--eta-dec", eta_dec, "--keep",
                                str(keep), "--json"])
        lo, hi = out["keep_beta_interval"]
        assert out["keep"] == keep
        assert lo == t[keep] and (hi is None if keep == 0 else hi == t[keep - 1])
        # Exactly `keep` modes survive inside, per the optimum (latent_dim 4 keeps the learned
        # case bounded: synthetic y is exactly linear in x, so all 5 modes fit y exactly).
        inside = lo * 1.01 if hi is None else float(np.sqrt(lo * hi))
        opt = run_json(capsys, ["optimum", "synthetic", "--eta-dec", eta_dec, "--beta",
                                repr(inside), "--latent-dim", "4", "--json"])
        assert opt["active_modes"] == keep
    assert main(["thresholds", "synthetic", "--eta-dec", eta_dec, "--keep", "2"]) == 0
    assert re.search(r"exactly 2 mode\(s\) survive for \S+ <= beta < \S+",
                     capsys.readouterr().out)


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["thresholds", "synthetic", "--keep", "-1"], r"--keep must be >= 0, got -1"),
        (["thresholds", "synthetic", "--keep", "6"],
         r"--keep 6 exceeds the number of modes d\* = 5; use --keep 0\.\.5"),
        (["thresholds", "synthetic", "--eta-dec", "0"], r"--eta-dec must be a finite number > 0"),
        (["optimum", "synthetic", "--eta-dec", "learn", "--beta", "0.5", "--latent-dim", "5"],
         r"NLL is unbounded below at beta=0\.5: the top 5 mode\(s\) explain the target exactly"),
        (["optimum", "synthetic", "--eta-dec", "-1", "--beta", "1", "--latent-dim", "2"],
         r"--eta-dec must be a finite number > 0"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, argv, pattern):
    err = run_error(capsys, argv)
    assert err.startswith(f"postcollapse {argv[0]}: error: ")
    assert re.search(pattern, err), err


def test_eta_dec_word_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["thresholds", "synthetic", "--eta-dec", "lern"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.search(r"--eta-dec: must be a number > 0 or 'learn', got 'lern'", err), err
