"""`postcollapse optimum --levels 2` and `--free-bits`: JSON against the library, tables,
saved parameters, and one line on stderr + exit status 2 for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from clirun import run_error, run_json
from postcollapse.cli import main
from postcollapse.data import load
from postcollapse.theory import freebits_optimum, hierarchical_loss, spectrum
from postcollapse.theory.hierarchical import HierarchicalParams, hierarchical_optimum


@pytest.fixture(scope="module")
def synthetic():
    ds = load("synthetic")
    return ds, spectrum(ds.moments())


H_ARGS = ["optimum", "synthetic", "--levels", "2", "--beta", "1", "--beta2", "2",
          "--latent-dim", "3", "--latent-dim2", "2", "--sigma1", "1.5"]


def test_levels2_json_matches_library(capsys, synthetic, tmp_path):
    _, spec = synthetic
    save = tmp_path / "h.npz"
    out = run_json(capsys, [*H_ARGS, "--json", "--save", str(save)])
    h = hierarchical_optimum(spec, latent_dim=3, latent_dim2=2, beta=1.0, beta2=2.0,
                             sigma1=1.5)
    assert out["loss"] == pytest.approx(h.loss, rel=1e-12)
    assert out["active_level1"] == [bool(a) for a in h.active_level1]
    assert out["active_level2"] == [bool(a) for a in h.active_level2]
    assert len(out["active_level1"]) == 3 and len(out["active_level2"]) == 2
    assert out["regime"] == "sigma1 fixed" and out["levels"] == 2
    # sigma1^2 = 2.25 > b' = 2: level 2 is active even on signal-free directions.
    assert out["zeta_threshold2"] == 0.0 and all(out["active_level2"])
    with np.load(save) as z:
        params = HierarchicalParams(*(z[n] for n in HierarchicalParams._fields))
        assert float(z["loss"]) == pytest.approx(h.loss)
    ds = load("synthetic")
    assert hierarchical_loss(ds.moments(), params, beta=1.0, beta2=2.0) == pytest.approx(
        h.loss, rel=1e-12)


def test_levels2_table_and_both_learnable(capsys):
    assert main(H_ARGS) == 0
    text = capsys.readouterr().out
    assert "regime     sigma1 fixed" in text and "level 2" in text and "z2[1]" in text
    out = run_json(capsys, ["optimum", "synthetic", "--levels", "2", "--beta", "1",
                            "--beta2", "3", "--latent-dim", "2", "--latent-dim2", "2",
                            "--json"])
    assert out["regime"] == "level 2 collapsed" and not any(out["active_level2"])
    assert out["zeta_threshold2"] is None


def test_free_bits_json_matches_library(capsys, synthetic):
    _, spec = synthetic
    out = run_json(capsys, ["optimum", "synthetic", "--free-bits", "0.5", "--beta", "12",
                            "--latent-dim", "3", "--json"])
    fb = freebits_optimum(spec, latent_dim=3, beta=12.0, lam=0.5)
    assert out["loss"] == pytest.approx(fb.loss, rel=1e-10)
    assert out["regime"] == fb.regime
    np.testing.assert_allclose(out["snr"], fb.snr, rtol=1e-6, atol=1e-8)
    assert out["free_bits"] == 0.5
    assert main(["optimum", "synthetic", "--free-bits", "0.5", "--beta", "12",
                 "--latent-dim", "3"]) == 0
    text = capsys.readouterr().out
    assert f"regime     {fb.regime}" in text and "snr p_i" in text


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--beta2", "1"], "--beta2 needs --levels 2"),
        (["--latent-dim2", "1"], "--latent-dim2 needs --levels 2"),
        (["--sigma1", "1"], "--sigma1 needs --levels 2"),
        (["--levels", "3"], "--levels must be 1 or 2"),
        (["--levels", "2", "--latent-dim2", "1"], "--levels 2 needs --beta2"),
        (["--levels", "2", "--beta2", "1"], "--levels 2 needs --latent-dim2"),
        (["--levels", "2", "--beta2", "1", "--latent-dim2", "1", "--free-bits", "0.1"],
         "--free-bits with --levels 2 is not supported"),
        (["--free-bits", "-0.5"], "--free-bits must be a finite number >= 0"),
        (["--free-bits", "nan"], "--free-bits must be a finite number >= 0"),
        (["--free-bits", "0.1", "--sigma", "prior"], "--sigma prior applies to the one-level"),
        (["--levels", "2", "--beta2", "-1", "--latent-dim2", "1"], "--beta2 must be"),
        (["--levels", "2", "--beta2", "1", "--latent-dim2", "0"], "--latent-dim2 must be >= 1"),
        (["--levels", "2", "--beta2", "1", "--latent-dim2", "1", "--sigma1", "0"],
         "--sigma1 must be"),
        (["--levels", "2", "--beta2", "0.5", "--latent-dim2", "1"],
         "unbounded below.*regime 'unbounded'"),
        (["--free-bits", "0.1", "--save", "out.txt"], "--save must name a .npz"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, argv, match):
    import re

    err = run_error(capsys, ["optimum", "synthetic", "--beta", "1", "--latent-dim", "2", *argv])
    assert re.search(match, err), err
