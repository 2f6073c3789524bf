"""`postcollapse thresholds` / `postcollapse optimum`: output, JSON keys, target rules, and
one line on stderr + exit status 2 for every kind of bad input."""

from __future__ import annotations

import gzip
import json
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from clirun import run_error, run_json
from postcollapse.cli import main
from postcollapse.data import DEFAULT_ZETA2, load
from postcollapse.theory import min_loss, spectrum

# ---------------------------------------------------------------------------- thresholds


def test_thresholds_json_synthetic(capsys):
    out = run_json(capsys, ["thresholds", "synthetic", "--json"])
    for key in ("n_samples", "d0", "d2", "rank", "zeta", "beta_thresholds", "residual",
                "eta_dec"):
        assert key in out
    assert (out["n_samples"], out["d0"], out["d2"], out["rank"]) == (2000, 5, 5, 5)
    zeta = np.array(out["zeta"])
    assert np.all(np.diff(zeta) <= 0)  # descending
    np.testing.assert_allclose(np.array(out["beta_thresholds"]), DEFAULT_ZETA2, rtol=1e-10)
    assert out["residual"] == pytest.approx(0.0, abs=1e-9)
    # eta_dec rescales: beta* = zeta^2 / eta_dec^2.
    out2 = run_json(capsys, ["thresholds", "synthetic", "--json", "--eta-dec", "2", "--top", "2"])
    np.testing.assert_allclose(out2["beta_thresholds"], np.array(DEFAULT_ZETA2[:2]) / 4)
    assert out2["eta_dec"] == 2.0 and len(out2["zeta"]) == 2


def test_thresholds_table(capsys):
    assert main(["thresholds", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "n_samples  2000" in out and "rank       5 of 5" in out and "residual" in out
    assert "mode" in out and "zeta^2" in out and "beta*" in out
    row1 = [ln for ln in out.splitlines() if ln.strip().startswith("1 ")][0].split()
    assert float(row1[2]) == pytest.approx(14.0) and float(row1[3]) == pytest.approx(14.0)


def test_thresholds_target_rules(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = x[:, :2] @ np.array([[2.0, 0.0], [0.0, 0.5]]) + 0.1 * rng.normal(size=(300, 2))
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    np.savez(tmp_path / "x.npz", x=x)
    np.save(tmp_path / "y.npy", y)
    # .npz with y: y is the target by default.
    out = run_json(capsys, ["thresholds", str(tmp_path / "xy.npz"), "--json"])
    assert (out["d0"], out["d2"]) == (4, 2) and out["residual"] > 0
    # --target same: plain VAE on x (PCA variances).
    out_same = run_json(capsys, ["thresholds", str(tmp_path / "xy.npz"), "--json",
                                 "--target", "same"])
    assert out_same["d2"] == 4
    ev = np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True))[::-1]
    np.testing.assert_allclose(out_same["beta_thresholds"], ev, rtol=1e-10)
    # No y in the file: plain VAE by default.
    assert run_json(capsys, ["thresholds", str(tmp_path / "x.npz"), "--json"])["d2"] == 4
    # A target from another file equals the .npz's own y.
    out_t = run_json(capsys, ["thresholds", str(tmp_path / "x.npz"), "--json", "--target",
                              str(tmp_path / "y.npy")])
    np.testing.assert_allclose(out_t["zeta"], out["zeta"], rtol=1e-12)


def test_thresholds_rank_deficient_is_reported(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 3))
    x = np.column_stack([x, np.full(100, 7.0), x[:, 1]])
    np.save(tmp_path / "rd.npy", x)
    out = run_json(capsys, ["thresholds", str(tmp_path / "rd.npy"), "--json"])
    assert out["rank"] == 3 and out["d0"] == 5 and len(out["zeta"]) == 3
    assert main(["thresholds", str(tmp_path / "rd.npy")]) == 0
    assert "rank-deficient" in capsys.readouterr().out


def test_thresholds_idx_gz(tmp_path, capsys):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, size=(30, 5, 5), dtype=np.uint8)
    raw = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">3I", 30, 5, 5) + imgs.tobytes()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    out = run_json(capsys, ["thresholds", str(tmp_path), "--json"])
    ev = np.linalg.eigvalsh(np.cov(imgs.reshape(30, -1) / 255.0, rowvar=False, bias=True))
    np.testing.assert_allclose(out["beta_thresholds"][:5], ev[::-1][:5], rtol=1e-9)


# ---------------------------------------------------------------------------- optimum


def test_optimum_json_and_save(tmp_path, capsys):
    path = tmp_path / "opt.npz"
    out = run_json(capsys, ["optimum", "synthetic", "--latent-dim", "4", "--beta", "5",
                            "--json", "--save", str(path)])
    for key in ("loss", "active_modes", "sigma2", "lambda", "theta"):
        assert key in out
    assert out["active_modes"] == 2  # zeta^2 = 14, 8 exceed beta = 5
    assert len(out["sigma2"]) == len(out["lambda"]) == len(out["theta"]) == 4
    np.testing.assert_allclose(out["sigma2"][:2], [5 / 14, 5 / 8], rtol=1e-10)
    np.testing.assert_allclose(out["sigma2"][2:], [1.0, 1.0])
    spec = spectrum(load("synthetic").moments())
    assert out["loss"] == pytest.approx(float(min_loss(spec, [5.0], latent_dim=4)[0]), rel=1e-12)
    with np.load(path) as z:
        assert {"U", "W", "sigma2", "b_e", "b_d"} <= set(z.files)
        assert z["U"].shape == (5, 4) and z["W"].shape == (5, 4)
        np.testing.assert_allclose(z["sigma2"], out["sigma2"])
    assert not list(tmp_path.glob(".*.tmp*"))  # atomic write left no temporary file


def test_optimum_prior_and_table(capsys):
    out = run_json(capsys, ["optimum", "synthetic", "--latent-dim", "2", "--beta", "20",
                            "--sigma", "prior", "--json"])
    assert out["active_modes"] == 0 and out["sigma2"] == [1.0, 1.0]  # complete collapse
    assert main(["optimum", "synthetic", "--latent-dim", "3", "--beta", "5"]) == 0
    text = capsys.readouterr().out
    assert "active     2 of 3" in text and "collapsed" in text


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_files(tmp_path):
    f = {}
    f["corrupt"] = tmp_path / "corrupt.npy"
    f["corrupt"].write_bytes(b"\x93NUMPY garbage")
    f["csv"] = tmp_path / "words.csv"
    f["csv"].write_text("a,b\n1,2\n3,four\n")
    x = np.arange(20.0).reshape(10, 2)
    x[3, 1] = np.nan
    x[5, 0] = np.inf
    f["nan"] = tmp_path / "nan.npz"
    np.savez(f["nan"], x=x)
    big = np.ones((5000, 3))
    big[:, 0] = np.arange(5000)
    big[4000, 2] = np.inf
    big[4500:4502, 1] = np.nan
    f["nannpy"] = tmp_path / "nan.npy"  # memory-mapped: found while streaming
    np.save(f["nannpy"], big)
    x = np.arange(20.0).reshape(10, 2)
    f["x10"] = tmp_path / "x10.npy"
    np.save(f["x10"], x)
    f["y9"] = tmp_path / "y9.npy"
    np.save(f["y9"], x[:9])
    f["rows1"] = tmp_path / "one.csv"
    f["rows1"].write_text("1,2,3\n")
    raw = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">3I", 10, 4, 4) + bytes(150)
    f["idx"] = tmp_path / "t-idx3-ubyte"
    f["idx"].write_bytes(raw)
    f["idxgz"] = tmp_path / "t-idx3-ubyte.gz"
    f["idxgz"].write_bytes(gzip.compress(raw + bytes(10))[:-12])
    return f


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["thresholds", "{tmp}/missing.npy"], r"No such file or directory: .*missing\.npy"),
        (["thresholds", "{corrupt}"], r"cannot read .*corrupt\.npy as \.npy"),
        (["thresholds", "{csv}"], r"non-numeric value 'four' at line 3, column 2"),
        (["thresholds", "{nan}"], r"1 NaN and 1 inf value\(s\); the first is at row 3, column 1"),
        (["thresholds", "{nannpy}"],
         r"nan\.npy: x holds 2 NaN and 1 inf value\(s\); the first is at row 4000, column 2"),
        (["thresholds", "{x10}", "--target", "{y9}"], r"10 rows but the target .* has 9"),
        (["thresholds", "{rows1}"], r"1 row\(s\); at least 2 are needed"),
        (["thresholds", "cifar10"], r"unknown data set 'cifar10'"),
        (["thresholds", "{idx}"], r"truncated: header \(10, 4, 4\) needs 160 data bytes, "
                                  r"found 150"),
        (["thresholds", "{idxgz}"], r"truncated or a corrupt gzip file"),
        (["thresholds", "synthetic", "--eta-dec", "0"], r"--eta-dec must be a finite number > 0"),
        (["thresholds", "synthetic", "--top", "0"], r"--top must be >= 1"),
        (["optimum", "synthetic", "--latent-dim", "2", "--beta", "0"],
         r"--beta must be a finite number > 0, got 0"),
        (["optimum", "synthetic", "--latent-dim", "2", "--beta=-1"],
         r"--beta must be a finite number > 0, got -1"),
        (["optimum", "synthetic", "--latent-dim", "2", "--beta", "nan"],
         r"--beta must be a finite number > 0"),
        (["optimum", "synthetic", "--latent-dim", "0", "--beta", "1"],
         r"--latent-dim must be >= 1, got 0"),
        (["optimum", "synthetic", "--latent-dim", "2", "--beta", "1", "--eta-enc=-2"],
         r"--eta-enc must be a finite number > 0"),
        (["optimum", "synthetic", "--latent-dim", "2", "--beta", "1", "--eta-dec", "0"],
         r"--eta-dec must be a finite number > 0"),
        (["optimum", "{csv}", "--latent-dim", "2", "--beta", "1"], r"non-numeric value 'four'"),
        (["optimum", "nosuch", "--latent-dim", "2", "--beta", "1"], r"unknown data set"),
        (["optimum", "synthetic", "--latent-dim", "2", "--beta", "1", "--save", "{tmp}/o.txt"],
         r"--save must name a \.npz file"),
    ],
)
def test_bad_input_one_line_exit_2(argv, pattern, bad_files, tmp_path, capsys):
    fill = {k: str(v) for k, v in bad_files.items()} | {"tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    err = run_error(capsys, argv)
    assert err.startswith(f"postcollapse {argv[0]}: error: ")
    assert re.search(pattern, err), err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["optimum", "synthetic", "--beta", "1"])  # --latent-dim missing
    assert exc.value.code == 2
    assert "--latent-dim" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["optimum", "synthetic", "--latent-dim", "2", "--beta", "1", "--sigma", "x"])
    assert exc.value.code == 2


# ---------------------------------------------------------------------------- subprocess

_NO_TORCH = """
import sys
from postcollapse.cli import main
rc = main({argv!r})
assert 'torch' not in sys.modules, 'torch was imported'
assert 'matplotlib' not in sys.modules, 'matplotlib was imported'
sys.exit(rc)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["thresholds", "synthetic", "--json"],
        ["optimum", "synthetic", "--latent-dim", "3", "--beta", "4", "--json"],
    ],
)
def test_subprocess_no_torch(argv):
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH.format(argv=argv)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["d0"] == 5


def test_subprocess_bad_input_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "postcollapse", "thresholds", str(tmp_path / "nope.npz")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "No such file or directory" in proc.stderr
