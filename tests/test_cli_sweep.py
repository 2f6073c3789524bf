"""`postcollapse sweep`: arguments, outputs, errors, and a kill / --resume round trip."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from postcollapse.cli import main
from postcollapse.cli.sweep_cmd import parse_betas


def test_parse_betas():
    assert parse_betas("1,2.5,4") == [1.0, 2.5, 4.0]
    assert parse_betas("1:3:3") == [1.0, 2.0, 3.0]
    assert parse_betas("1:100:3", log=True) == pytest.approx([1.0, 10.0, 100.0])
    with pytest.raises(ValueError, match="START:STOP:NUM"):
        parse_betas("1:2")
    with pytest.raises(ValueError, match="> 0"):
        parse_betas("0,1")


def test_sweep_writes_results(tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["sweep", "synthetic", "--betas", "0.5,20", "--seeds", "2", "--steps", "20",
               "--latent-dim", "2", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "results.csv (4 rows)" in text
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(float(r["beta"]), int(r["seed"])) for r in rows] == [
        (0.5, 0), (0.5, 1), (20.0, 0), (20.0, 1)]
    assert (out / "sweep.json").exists() and (out / "model.pt").exists()


@pytest.mark.parametrize(
    ("argv", "match"),
    [(["--betas", "1:x:3"], "--betas must be"),
     (["--model", "gru"], "model must be one of"),
     (["--optimizer", "lbfgs", "--model", "relu"], "needs an exact loss"),
     (["--seeds", "0"], "--seeds must be >= 1"),
     (["--no-free-bits-smoothing"], "--no-free-bits-smoothing needs --free-bits")],
)
def test_sweep_errors_are_one_line(tmp_path, capsys, argv, match):
    rc = main(["sweep", "synthetic", "--steps", "2", "--out", str(tmp_path), *argv])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("postcollapse sweep: error:")
    assert __import__("re").search(match, err)


def test_free_bits_smoothing_can_be_turned_off(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["sweep", "synthetic", "--betas", "2", "--steps", "5", "--latent-dim", "2",
            "--free-bits", "0.2", "--out", str(out)]
    assert main([*argv, "--no-free-bits-smoothing"]) == 0
    config = __import__("json").loads((out / "sweep.json").read_text())["config"]
    assert config["free_bits_smoothing"] is False and config["free_bits"] == 0.2
    assert main([*argv, "--resume"]) == 2  # the default (smoothing) is another setting
    assert "other settings" in capsys.readouterr().err


def test_missing_file_is_an_error(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.npy"), "--betas", "1"]) == 2
    assert "nope.npy" in capsys.readouterr().err


def _wait_cpu_seconds(proc, seconds: float, *, timeout: float = 120.0) -> None:
    """Wait until ``proc`` has used ``seconds`` of CPU time (Linux /proc), or has ended; a
    plain wall-clock wait where /proc is missing."""
    stat = f"/proc/{proc.pid}/stat"
    if not os.path.exists(stat):
        time.sleep(seconds)
        return
    tick = os.sysconf("SC_CLK_TCK")
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            return
        if (int(fields[11]) + int(fields[12])) / tick >= seconds:  # utime + stime
            return
        time.sleep(0.1)


def _cmd(out, *extra):
    return [sys.executable, "-m", "postcollapse", "sweep", "synthetic", "--model", "relu",
            "--sigma", "linear", "--betas", "0.5,2", "--batch-size", "64", "--steps", "%d",
            "--dtype", "float64", "--tol", "0", "--quiet", "--out", str(out), *extra]


@pytest.mark.slow
def test_kill_and_resume_subprocess_equals_uninterrupted(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    cut = tmp_path / "cut"
    args_full = [a if a != "%d" else "3000" for a in _cmd(full)]
    subprocess.run(args_full, check=True, env=env, capture_output=True, timeout=300)
    args = [a if a != "%d" else "3000" for a in _cmd(cut)]
    # Checkpoints at every check: the first one shows that training (and the SIGTERM
    # handler) has started, however slow the start-up on a loaded machine.
    proc = subprocess.Popen(args + ["--checkpoint-seconds", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (cut / "checkpoint.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # finished before the kill: nothing to resume
        pytest.skip("the run finished before it was killed")
    assert proc.returncode == 130, err
    assert b"--resume" in err
    assert (cut / "checkpoint.pt").exists()
    subprocess.run(args + ["--resume"], check=True, env=env, capture_output=True, timeout=300)

    def table(p):
        with open(p / "results.csv") as fh:
            return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(fh)]

    assert table(cut) == table(full)


def test_subprocess_help_and_quick_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "postcollapse", "sweep", "--help"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--resume" in r.stdout
    r = subprocess.run([sys.executable, "-m", "postcollapse", "sweep", "synthetic", "--betas",
                        "1", "--steps", "5", "--quiet", "--out", str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "results.csv").exists()
