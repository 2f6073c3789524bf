"""Fuzzing the CLI: argument vectors drawn from the real flags of every command.

The flags, their types and choices are found by walking ``build_parser()``, so a new flag
is fuzzed without touching this file. Cheap commands (thresholds, optimum, effective-beta,
diagnose) are run; ``sweep`` and ``reproduce`` are only parsed, and run only with a value
that must fail validation. Every case ends in exit status 0 with finite numbers in the
output, or exit status 2 with one line on stderr; never a traceback or a hang.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from fuzzing import fast_and_slow, time_limit
from postcollapse.cli import build_parser, main

RUN = ("thresholds", "optimum", "effective-beta", "diagnose")
PARSE_ONLY = ("sweep", "reproduce", "locate")  # training commands: parsing only
# Flags never drawn: a real cluster / network address, or a long-running local cluster.
SKIP_FLAGS = {"--scheduler", "--help", "-h", "--version"}
_NONFINITE = re.compile(r"(?<![\w.])-?(nan|inf|infinity)(?![\w])", re.IGNORECASE)


def _data_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="pc-cli-fuzz-"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)) @ np.diag([3.0, 2.0, 1.0, 0.5])
    np.save(d / "good.npy", x)
    np.save(d / "far.npy", 1e6 + 1e-3 * x)
    np.save(d / "wide.npy", rng.normal(size=(4, 12)))
    np.save(d / "const.npy", np.ones((10, 3)))
    np.save(d / "int.npy", rng.integers(0, 9, size=(30, 3)).astype(">i4"))
    np.save(d / "one_row.npy", x[:1])
    np.savez(d / "xy.npz", x=x, y=x[:, :2] + 0.1 * rng.normal(size=(40, 2)))
    (d / "good.csv").write_text("a,b\n1,2\n3,5\n4,4\n")
    (d / "bad.csv").write_text("1,2\n3\n")
    (d / "junk.npy").write_bytes(b"\x93NUMPY junk")
    mu = rng.normal(size=(50, 3)) * [1.0, 0.01, 0.0]
    np.savez(d / "lat.npz", mu=mu, logvar=np.full((50, 3), -1.0))
    (d / "lat.csv").write_text(
        "mu_1,logvar_1\n" + "\n".join(f"{v:.4f},-1" for v in rng.normal(size=10)) + "\n")
    return d


DATA = _data_dir()
GOOD_DATA = [str(DATA / n) for n in ("good.npy", "far.npy", "wide.npy", "const.npy",
                                      "int.npy", "xy.npz", "good.csv")] + ["synthetic"]
BAD_DATA = [str(DATA / n) for n in ("one_row.npy", "bad.csv", "junk.npy", "lat.npz",
                                    "missing.npy")] + ["nonsense", "", "same"]
DATA_VALUES = GOOD_DATA * 2 + BAD_DATA
# valid values three times as likely as junk, so that most commands get far enough to run
INT_VALUES = ["1", "2", "3"] * 3 + ["0", "-1", "x", "1.5", "99999999999999999999"]
FLOAT_VALUES = ["1", "0.5", "1e-8", "1e8", "2"] * 3 + [
    "0", "-1", "nan", "inf", "-inf", "1e308", "abc", "", "learn"]


def _conventions():
    from postcollapse.diagnostics import LOSS_CONVENTIONS

    return sorted(LOSS_CONVENTIONS)


# A valid base command for each command that is run (a list: one value drawn from it).
VALID = {
    "thresholds": [GOOD_DATA],
    "optimum": [GOOD_DATA, "--latent-dim", ["1", "2", "3", "5"], "--beta",
                ["1e-8", "0.3", "1", "1e8"]],
    "effective-beta": ["--convention", _conventions()],
    "diagnose": ["--latents", [str(DATA / "lat.npz"), str(DATA / "lat.csv")]],
}


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _value_strategy(action):
    if action.dest in ("workers", "worker_threads", "cell_betas"):
        return st.sampled_from(["0", "-1", "x"])  # never start a local cluster
    if action.choices is not None:
        return st.sampled_from([str(c) for c in action.choices] * 3 + ["bogus"])
    if action.type is int:
        return st.sampled_from(INT_VALUES)
    if action.type is float or (action.type is not None and action.type is not str
                                and "eta" in action.dest):
        return st.sampled_from(FLOAT_VALUES)
    if action.dest == "save":
        out = tempfile.mkdtemp(prefix="pc-cli-save-")
        return st.sampled_from([f"{out}/o.npz", f"{out}/o.txt", f"{out}/no/such/dir/o.npz"])
    if action.dest == "convention":
        return st.sampled_from(_conventions() * 2 + ["bogus", ""])
    if action.dest == "latents":
        return st.sampled_from([str(DATA / "lat.npz"), str(DATA / "lat.csv")] * 3 + BAD_DATA)
    if action.dest in ("columns", "target_columns"):
        return st.sampled_from(["a", "a,b", ",", "zz"])
    return st.sampled_from(DATA_VALUES + ["0.5", "x", "mse", "sum", "mean", "pytorch-vae"])


def _argv_strategy(name, parser):
    positionals, options = [], []
    for a in parser._actions:
        if any(o in SKIP_FLAGS for o in a.option_strings):
            continue
        if not a.option_strings:
            positionals.append(a)
        else:
            options.append(a)

    def _flag(draw, a):
        flag = draw(st.sampled_from(a.option_strings))
        return [flag] if a.nargs == 0 else [flag, draw(_value_strategy(a))]

    @st.composite
    def build(draw):
        if name in VALID and draw(st.booleans()):
            # half the cases: a valid command plus up to three random flags
            argv = [name, *(draw(st.sampled_from(v)) if isinstance(v, list) else v
                            for v in VALID[name])]
            for a in draw(st.lists(st.sampled_from(options), max_size=3, unique_by=id)):
                argv += _flag(draw, a)
            return argv
        argv = [name]
        for a in positionals:
            if draw(st.integers(0, 9)) == 0:
                continue  # sometimes missing: argparse must say so in one line
            if a.choices is not None:
                argv.append(draw(st.sampled_from([str(c) for c in a.choices] + ["bogus"])))
            else:
                argv.append(draw(st.sampled_from(DATA_VALUES)))
        # required flags usually present, others sometimes
        for a in options:
            keep = draw(st.integers(0, 19)) < (17 if a.required else 3)
            if not keep:
                continue
            argv += _flag(draw, a)
        if draw(st.integers(0, 19)) == 0:
            argv.append(draw(st.sampled_from(["--nope", "-x", "extra", "--json=1"])))
        return argv

    return build()


COMMANDS = _commands()




def run_cli(argv, *, seconds=60):
    """(exit status, stdout, stderr) of ``postcollapse ARGV`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with (contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
          time_limit(seconds, "command")):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return rc, out.getvalue(), err.getvalue()


def _no_nan(obj):
    raise AssertionError(f"JSON holds the non-finite number {obj}")


def check_outcome(argv, rc, out, err):
    assert rc in (0, 2), (argv, rc, err)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert "Traceback" not in err
        return
    assert not _NONFINITE.search(out), (argv, out)
    if "--json" in argv:
        json.loads(out, parse_constant=_no_nan)


def _fuzz_command(name, data):
    argv = data.draw(_argv_strategy(name, COMMANDS[name]))
    if name in PARSE_ONLY:
        parser = build_parser()
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                parser.parse_args(argv)
            except SystemExit as exc:
                assert exc.code == 2
                assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
        return
    check_outcome(argv, *run_cli(argv))


test_fuzz_cli, test_fuzz_cli_slow = fast_and_slow(
    fast=25, slow=400, name=st.sampled_from(sorted(COMMANDS)), data=st.data(),
)(_fuzz_command)


def test_walk_finds_every_command():
    assert set(RUN) | set(PARSE_ONLY) <= set(COMMANDS)


@pytest.mark.parametrize("extra", [
    ["--seeds", "0"], ["--latent-dim", "0"], ["--lr", "-1"], ["--betas", "1:0:x"],
    ["--batch-size", "0"], ["--eta-dec", "nan"], ["--hidden", "0"], ["--steps", "-5"],
])
def test_sweep_validation_failures_exit_2_before_training(tmp_path, extra):
    argv = ["sweep", str(DATA / "good.npy"), "--steps", "1", "--out", str(tmp_path / "o"),
            "--quiet", *extra]
    rc, out, err = run_cli(argv, seconds=120)
    assert rc == 2, (argv, out, err)
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "results.csv").exists()


@pytest.mark.parametrize("argv", [
    ["reproduce", "bogus"], ["reproduce", "fig1", "--preset", "nope"],
])
def test_reproduce_validation_failures_exit_2(argv):
    rc, _, err = run_cli(argv)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err


def test_subprocess_exit_status_and_single_line(tmp_path):
    """The installed entry point (python -m postcollapse), not just ``main``."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "postcollapse", "optimum", str(DATA / "junk.npy"),
                        "--latent-dim", "2", "--beta", "1"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot read" in r.stderr


def test_memory_error_is_one_line(monkeypatch):
    import postcollapse.cli.theory_cmds as theory_cmds

    def boom(args):
        raise MemoryError("Unable to allocate 36.4 TiB for an array")

    monkeypatch.setattr(theory_cmds, "cmd_thresholds", boom)
    rc, out, err = run_cli(["thresholds", "synthetic"])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "out of memory (Unable to allocate 36.4 TiB" in err


def test_learned_eta_dec_with_extensions_is_explained():
    rc, _, err = run_cli(["optimum", str(DATA / "good.npy"), "--latent-dim", "2", "--beta",
                          "1", "--eta-dec", "learn", "--free-bits", "0.1"])
    assert rc == 2 and "--eta-dec learn applies to the one-level VAE only" in err


# ---------------------------------------------------------------- extreme values, end to end

_GRID_FILES = ("far.npy", "wide.npy", "const.npy", "int.npy", "xy.npz")


def _grid(files, etas, betas):
    cases = []
    for f in files:
        path = str(DATA / f)
        for ed in etas:
            for j in ([], ["--json"]):
                cases.append(["thresholds", path, "--eta-dec", ed, "--keep", "1", *j])
                for b in betas:
                    for ee in ("1e-4", "1e4"):
                        base = ["optimum", path, "--latent-dim", "3", "--beta", b,
                                "--eta-dec", ed, "--eta-enc", ee, *j]
                        cases += [base, [*base, "--sigma", "prior"]]
                        if ed != "learn":
                            cases += [[*base, "--free-bits", "0.5"],
                                      [*base, "--levels", "2", "--beta2", b,
                                       "--latent-dim2", "2"]]
    return cases


def _check_grid(cases):
    for argv in cases:
        rc, out, err = run_cli(argv)
        check_outcome(argv, rc, out, err)
        if rc == 2:  # the only refusals: the data or the request, never a NaN
            assert any(s in err for s in ("exceeds the number of modes", "unbounded below")), (
                argv, err)


def test_theory_cli_extremes_print_no_nan():
    _check_grid(_grid(("far.npy",), ("learn",), ("1e-8", "1e8")))


@pytest.mark.slow
def test_theory_cli_extremes_print_no_nan_slow():
    _check_grid(_grid(_GRID_FILES, ("1e-4", "1e4", "learn"), ("1e-8", "1e8")))


def test_huge_free_bits_refused_in_one_line():
    rc, out, err = run_cli(["optimum", str(DATA / "far.npy"), "--latent-dim", "1", "--beta",
                            "1e8", "--eta-dec", "1e8", "--json", "--free-bits", "1e8"])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "--free-bits = 1e+08 nats per latent is out of range" in err


def test_keep_zero_prints_no_inf():
    rc, out, _ = run_cli(["thresholds", str(DATA / "good.npy"), "--keep", "0"])
    assert rc == 0 and not _NONFINITE.search(out)
    assert re.search(r"exactly 0 mode\(s\) survive for [0-9.]+ <= beta\n", out)
    rc, out, _ = run_cli(["thresholds", str(DATA / "good.npy"), "--keep", "0", "--json"])
    assert json.loads(out, parse_constant=_no_nan)["keep_beta_interval"][1] is None
