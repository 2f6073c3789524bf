"""CLI: ``postcollapse diagnose`` and ``postcollapse effective-beta``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from postcollapse.cli import main


def _latents(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    mu = np.stack([2.0 * x, 0.0 * x, 0.3 * x], axis=1)
    logvar = np.stack([np.full(n, np.log(0.25)), np.zeros(n), np.full(n, -0.2)], axis=1)
    return mu, logvar


def _write_csv(path, mu, logvar, *, header=None):
    k = mu.shape[1]
    header = header or [f"mu_{i + 1}" for i in range(k)] + [f"logvar_{i + 1}" for i in range(k)]
    rows = np.concatenate([mu, logvar], axis=1)
    lines = [",".join(header)] + [",".join(f"{v:.17g}" for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def npz_file(tmp_path):
    mu, logvar = _latents()
    p = tmp_path / "lat.npz"
    np.savez(p, mu=mu, logvar=logvar)
    return p


def test_diagnose_json_npz_matches_library(npz_file, capsys):
    from postcollapse.diagnostics import collapse_metrics

    rc = main(["diagnose", "--latents", str(npz_file), "--json", "--mi-samples", "100"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    mu, logvar = _latents()
    ref = collapse_metrics(mu, logvar, mi_samples=100)
    np.testing.assert_allclose(out["kl"], ref.kl, rtol=1e-12)
    np.testing.assert_allclose(out["mi"], ref.mi, rtol=1e-12)
    assert out["active_units"] == 2 and out["active"] == [True, False, True]
    assert out["collapse_rate"] == pytest.approx(1 / 3)
    assert out["n_samples"] == 300 and out["latent_dim"] == 3


def test_diagnose_csv_equals_npz_and_options(tmp_path, npz_file, capsys):
    mu, logvar = _latents()
    p = tmp_path / "lat.csv"
    # columns in another order, plus an ignored column
    k = mu.shape[1]
    header = [f"logvar_{i + 1}" for i in range(k)] + ["label"] + [f"mu_{i + 1}" for i in range(k)]
    rows = np.concatenate([logvar, np.zeros((len(mu), 1)), mu], axis=1)
    p.write_text(",".join(header) + "\n"
                 + "\n".join(",".join(f"{v:.17g}" for v in r) for r in rows) + "\n")
    assert main(["diagnose", "--latents", str(p), "--json", "--threshold", "0.5",
                 "--epsilon", "0.1", "--delta", "0.2", "--mi-samples", "0"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["diagnose", "--latents", str(npz_file), "--json", "--threshold", "0.5",
                 "--epsilon", "0.1", "--delta", "0.2", "--mi-samples", "0"]) == 0
    b = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(a["kl"], b["kl"], rtol=1e-12)
    assert a["threshold"] == 0.5 and a["epsilon"] == 0.1 and a["delta"] == 0.2
    assert a["active"] == [True, False, False]  # Var(0.3 x) ~ 0.09 < 0.5
    assert a["mi"] is None


def test_diagnose_text_table(npz_file, capsys):
    assert main(["diagnose", "--latents", str(npz_file), "--mi-samples", "50"]) == 0
    out = capsys.readouterr().out
    assert "active units   2 of 3" in out
    assert "collapse rate  0.333" in out
    assert len([ln for ln in out.splitlines() if ln.strip().startswith(("1 ", "2 ", "3 "))]) == 3


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: np.savez(p, mu=np.zeros((5, 2))), r"lacks array\(s\) logvar"),
        (lambda p: np.savez(p, mean=np.zeros((5, 2)), lv=np.zeros((5, 2))),
         r"lacks array\(s\) mu, logvar \(it has: mean, lv\)"),
        (lambda p: np.savez(p, mu=np.zeros((5, 2)), logvar=np.zeros((5, 3))),
         r"mu has shape \(5, 2\) but logvar has shape \(5, 3\)"),
        (lambda p: np.savez(p, mu=np.array([[0.0, np.nan]] * 4), logvar=np.zeros((4, 2))),
         r"mu holds 4 NaN and 0 inf value\(s\); the first is at row 0, column 1"),
        (lambda p: np.savez(p, mu=np.zeros((4, 2)), logvar=np.full((4, 2), np.inf)),
         r"logvar holds 0 NaN and 8 inf"),
        (lambda p: p.write_bytes(b"not a zip"), r"not a readable \.npz"),
    ],
)
def test_diagnose_bad_npz_exit_2(tmp_path, capsys, make, match):
    p = tmp_path / "bad.npz"
    make(p)
    assert main(["diagnose", "--latents", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("postcollapse diagnose: error: ")
    assert __import__("re").search(match, err), err


@pytest.mark.parametrize(
    "text, match",
    [
        ("mu_1,mu_2,logvar_1\n0,0,0\n", r"2 mu columns but 1 logvar columns"),
        ("a,b\n1,2\n", r"no mu_1\.\. columns"),
        ("mu_1,logvar_1\n0,0\n1,x\n", r"line 3 holds a value that is not a number"),
        ("mu_1,logvar_1\n0,nan\n", r"logvar holds 1 NaN"),
        ("mu_1,mu_3,logvar_1,logvar_3\n0,0,0,0\n", r"numbered 1\.\.K without gaps"),
        ("mu_1,logvar_1\n", r"no data rows"),
        ("mu_1,logvar_1\n0,0,0\n", r"line 2 has 3 fields, the header has 2"),
    ],
)
def test_diagnose_bad_csv_exit_2(tmp_path, capsys, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    assert main(["diagnose", "--latents", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert __import__("re").search(match, err), err


def test_diagnose_missing_file_and_bad_options(tmp_path, npz_file, capsys):
    assert main(["diagnose", "--latents", str(tmp_path / "nope.npz")]) == 2
    assert "No such file or directory" in capsys.readouterr().err
    assert main(["diagnose", "--latents", str(tmp_path / "x.txt")]) == 2
    assert "unsupported latents file type '.txt'" in capsys.readouterr().err
    assert main(["diagnose", "--latents", str(npz_file), "--delta", "1.5"]) == 2
    assert "delta must be in [0, 1)" in capsys.readouterr().err
    assert main(["diagnose", "--latents", str(npz_file), "--threshold", "-1"]) == 2
    assert "threshold must be a finite number > 0" in capsys.readouterr().err


def test_effective_beta_json(capsys):
    assert main(["effective-beta", "--recon", "mse-mean", "--kl", "sum", "--kld-weight",
                 "0.01", "--dim", "784", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["effective_beta"] == pytest.approx(0.01 * 784 / 2, rel=1e-12)
    assert "active_modes" not in out
    assert main(["effective-beta", "--recon", "gaussian-nll", "--kl", "mean", "--kld-weight",
                 "4", "--eta-dec", "0.5", "--latent-dim", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["effective_beta"] == pytest.approx(4 / 8 * 0.25, rel=1e-12)
    assert main(["effective-beta", "--recon", "mse-sum", "--kl", "sum", "--recon-batch",
                 "sum", "--batch-size", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["effective_beta"] == pytest.approx(1 / 64)


def test_effective_beta_with_data(tmp_path, capsys):
    from postcollapse import theory

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4)) * np.sqrt([6.0, 3.0, 0.8, 0.3])
    p = tmp_path / "x.npy"
    np.save(p, x)
    thr = theory.thresholds(theory.spectrum(theory.Moments.from_arrays(x)))
    b = float(np.sqrt(thr[1] * thr[2]))
    w = 2 * b / 4
    assert main(["effective-beta", "--recon", "mse-mean", "--kl", "sum", "--kld-weight",
                 repr(w), "--data", str(p), "--latent-dim", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["effective_beta"] == pytest.approx(b, rel=1e-12)
    assert out["active_modes"] == 2 and out["dim"] == 4
    np.testing.assert_allclose(out["thresholds"], thr, rtol=1e-10)
    assert main(["effective-beta", "--recon", "mse-mean", "--kl", "sum", "--kld-weight",
                 repr(w), "--data", str(p), "--latent-dim", "3"]) == 0
    text = capsys.readouterr().out
    assert "predicted surviving modes  2 of latent_dim 3" in text


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--recon", "mse-mean", "--kl", "sum"], r"pass dim \(D\) or data"),
        (["--recon", "mse-sum", "--kl", "mean"], r"pass latent_dim"),
        (["--recon", "gaussian-nll", "--kl", "sum"], r"needs eta_dec"),
        (["--recon", "mse-sum", "--kl", "sum", "--kld-weight", "-2"],
         r"kld_weight must be a finite number > 0"),
        (["--recon", "mse-sum", "--kl", "sum", "--kl-batch", "sum"], r"pass batch_size"),
        (["--recon", "mse-mean", "--kl", "sum", "--dim", "3", "--data", "nonexistent.npy"],
         r"nonexistent\.npy"),
    ],
)
def test_effective_beta_errors_exit_2(capsys, argv, match):
    assert main(["effective-beta", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("postcollapse effective-beta: error: ")
    assert __import__("re").search(match, err), err


@pytest.mark.parametrize(
    "argv",
    [["--recon", "bce", "--kl", "sum"], ["--convention", "pythae-betavae-bce"],
     ["--convention", "keras-vae"], ["--convention", "pytorch-examples-vae"]],
)
def test_effective_beta_bce_explains_instead_of_invalid_choice(capsys, argv):
    assert main(["effective-beta", *argv]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" not in err and err.count("\n") == 1
    assert "Gaussian decoders" in err and "postcollapse locate" in err


def test_effective_beta_bad_choice_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["effective-beta", "--recon", "l1", "--kl", "sum"])
    assert exc.value.code == 2
    assert "invalid choice: 'l1'" in capsys.readouterr().err


def test_effective_beta_convention_and_top(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 30)) * np.linspace(3.0, 0.1, 30)
    p = tmp_path / "x.npy"
    np.save(p, x)
    # pythae BetaVAE: 0.5 * SE + beta * KL  =>  beta * eta_dec^2 = beta
    assert main(["effective-beta", "--convention", "pythae-betavae", "--beta", "2.5",
                 "--data", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["effective_beta"] == pytest.approx(2.5, rel=1e-12)
    assert out["recon_coef"] == 0.5 and out["convention"] == "pythae-betavae"
    assert len(out["thresholds"]) == 10 and out["n_modes"] == 30  # not all by default
    assert main(["effective-beta", "--convention", "pythae-betavae", "--data", str(p),
                 "--json", "--top", "0"]) == 0
    assert len(json.loads(capsys.readouterr().out)["thresholds"]) == 30
    assert main(["effective-beta", "--convention", "pythae-betavae", "--data", str(p),
                 "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "... 27 more mode(s)" in text and "source pythae" in text
    assert main(["effective-beta", "--list-conventions"]) == 0
    assert "pytorch-vae-beta-h" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], r"pass --recon and --kl, or --convention NAME"),
        (["--convention", "pythae-vae", "--recon", "mse-sum"], r"fixes recon"),
        (["--convention", "pythae-vae", "--beta", "2"], r"has no beta"),
        (["--convention", "pytorch-vae-vanilla", "--dim", "10"], r"needs kld_weight"),
        (["--recon", "mse-sum", "--kl", "sum", "--beta", "2"], r"pass convention="),
        (["--convention", "pythae-vae", "--data", "synthetic", "--top", "-1"], r"--top"),
    ],
)
def test_effective_beta_convention_errors_exit_2(capsys, argv, match):
    assert main(["effective-beta", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("postcollapse effective-beta: error: ")
    assert __import__("re").search(match, err), err


def test_effective_beta_near_threshold_warning_at_ten_percent(tmp_path, capsys):
    """A margin of 7-8 % (where trained models were seen one mode off) is warned about."""
    x = np.random.default_rng(1).standard_normal((300, 3)) * np.sqrt([8.0, 2.0, 0.5])
    p = tmp_path / "x.npy"
    np.save(p, x)
    from postcollapse import theory

    t1 = float(theory.thresholds(theory.spectrum(theory.Moments.from_arrays(x)))[0])
    for factor, warned in ((1.075, True), (0.93, True), (1.2, False)):
        assert main(["effective-beta", "--recon", "mse-sum", "--kl", "sum",
                     "--recon-weight", "0.5", "--kld-weight", repr(t1 * factor),
                     "--data", str(p)]) == 0
        assert ("warning: within 10% of a threshold" in capsys.readouterr().out) is warned


def test_subprocess_effective_beta():
    r = subprocess.run(
        [sys.executable, "-m", "postcollapse", "effective-beta", "--recon", "mse-mean",
         "--kl", "sum", "--kld-weight", "0.0114", "--dim", "784"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "beta * eta_dec^2 = 4.4688" in r.stdout
    r = subprocess.run(
        [sys.executable, "-c",
         "import sys; from postcollapse.cli import main; rc = main(sys.argv[1:]); "
         "assert 'torch' not in sys.modules, 'effective-beta imported torch'; "
         "raise SystemExit(rc)",
         "effective-beta", "--recon", "mse-sum", "--kl", "sum", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.slow  # a fresh interpreter importing torch: ~5-20 s on a loaded 2-core box
def test_subprocess_diagnose(npz_file, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=np.zeros((3, 2)))
    r = subprocess.run(
        [sys.executable, "-m", "postcollapse", "diagnose", "--latents", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "lacks array(s) logvar" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "postcollapse", "diagnose", "--latents", str(npz_file),
         "--json", "--mi-samples", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["active_units"] == 2
