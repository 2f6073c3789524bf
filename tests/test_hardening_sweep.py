"""Hardening of the training side: interrupted work, unwritable output, training faults and
determinism.

* A sweep killed with SIGKILL at random points (delays drawn from a seeded generator), while
  it writes a checkpoint and just before it renames results.csv, resumes with ``--resume``
  to a results.csv identical to an uninterrupted run's (all columns but ``wall_time``, as
  text, so bit for bit); at every kill point each output file is absent or complete, and no
  temporary remains after the resume.
* A read-only, misnamed or full output folder is a one-line error before training.
* A diverging member, a non-finite batch and a far too large learning rate are reported per
  member (``diverged`` and ``fault``), the other members' rows are those of a sweep without
  the bad member, and the CLI exits 3 with a stderr line saying how many failed.
* The same command with the same seed writes the same results.csv twice.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import postcollapse._io as pio
from postcollapse.cli import main
from postcollapse.data import synthetic
from postcollapse.train import sweep
from postcollapse.train.checkpoint import OUTPUT_FILES

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# ReLU encoder / decoder with mini-batches: batch order and noise streams both matter.
SWEEP_ARGS = ["sweep", "synthetic", "--model", "relu", "--sigma", "linear", "--betas", "0.5,2",
              "--seeds", "2", "--batch-size", "64", "--steps", "1200", "--tol", "0",
              "--checkpoint-seconds", "0", "--quiet", "--device", "cpu"]
N_MEMBERS = 4
TIME_COLUMNS = ("wall_time",)

# Runs the CLI and SIGKILLs itself at a chosen write: "ckpt N" truncates the N-th checkpoint
# temporary to half its size and dies before the rename (a kill during the checkpoint
# write); "NAME 0" dies just before the temporary of NAME is renamed into place.
KILLER = r"""
import os, signal, sys
what, n = sys.argv[1], int(sys.argv[2])
if what == "ckpt":
    import torch
    real_save, seen = torch.save, [0]
    def save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if ".checkpoint.pt." in os.path.basename(str(f)):
            seen[0] += 1
            if seen[0] == n:
                with open(f, "r+b") as fh:
                    fh.truncate(os.path.getsize(f) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
    torch.save = save
else:
    real_replace = os.replace
    def replace(src, dst, *a, **k):
        if os.path.basename(str(dst)) == what:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *a, **k)
    os.replace = replace
from postcollapse.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "postcollapse", *SWEEP_ARGS, "--out", str(out), *extra]


def _killer(out: Path, what: str, n: int, *extra: str) -> list[str]:
    return [sys.executable, "-c", KILLER, what, str(n), *SWEEP_ARGS, "--out", str(out), *extra]


def _table(path: Path) -> list[dict]:
    """results.csv as text cells without the clock columns (bit-for-bit comparison)."""
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in TIME_COLUMNS}
                for r in csv.DictReader(fh)]


def _temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".")) if out.exists() else []


def _check_outputs(out: Path) -> dict:
    """Every output file in ``out`` is complete and parseable; temporaries are hidden.

    Returns what was found: {"files": names, "temps": names, "step": checkpoint step}."""
    found = {"files": [], "temps": [], "step": None}
    if not out.exists():
        return found
    for p in sorted(out.iterdir()):
        if p.name.startswith("."):  # a killed writer's temporary: .NAME.XXXX.tmp[.ext]
            m = re.fullmatch(r"\.(.+)\.[a-z0-9_]+\.tmp(\..+)?", p.name)
            assert m and m.group(1) in OUTPUT_FILES, p.name
            found["temps"].append(p.name)
            continue
        assert p.name in OUTPUT_FILES, p.name
        found["files"].append(p.name)
        if p.suffix == ".pt":
            ck = torch.load(p, map_location="cpu", weights_only=True)
            assert torch.isfinite(ck["flat"]).all()
            if p.name == "checkpoint.pt":
                found["step"] = int(ck["state"]["step"])
        elif p.suffix == ".csv":
            rows = _table(p)
            assert len(rows) == N_MEMBERS and all(r["fault"] == "" for r in rows)
        else:
            json.loads(p.read_text())
    if "sweep.json" in found["files"]:  # the finished mark comes with its results
        assert {"results.csv", "model.pt"} <= set(found["files"])
    return found


def _wait_for_training(out: Path, proc, since: float) -> bool:
    """Wait until ``proc`` writes a checkpoint (training runs) or ends; True for the first."""
    ck = out / "checkpoint.pt"
    while proc.poll() is None:
        try:
            if ck.stat().st_mtime >= since:
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of the command; ``seconds`` holds its training time (from the
    first checkpoint to the end), the scale of the kill delays."""
    out = tmp_path_factory.mktemp("reference") / "out"
    since = time.time() - 1.0
    t0 = time.perf_counter()
    proc = subprocess.Popen(_cli(out), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert _wait_for_training(out, proc, since)
    t1 = time.perf_counter()
    assert proc.wait(timeout=300) == 0
    (out / "seconds").write_text(json.dumps([t1 - t0, time.perf_counter() - t1]))
    return out


def _finish(out: Path, reference: Path) -> None:
    r = subprocess.run(_cli(out, "--resume"), env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert _table(out / "results.csv") == _table(reference / "results.csv")
    assert _temporaries(out) == [] and not (out / "checkpoint.pt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "results.csv", "sweep.json"]
    a = torch.load(out / "model.pt", weights_only=True)["flat"]
    b = torch.load(reference / "model.pt", weights_only=True)["flat"]
    assert torch.equal(a, b)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_uninterrupted(reference, tmp_path):
    """Four SIGKILLs: the first at a random time within the start-up and first checkpoint,
    the others at random times after the resumed run began to train."""
    out = tmp_path / "out"
    start_s, train_s = json.loads((reference / "seconds").read_text())
    rng = np.random.default_rng(20260414)
    mid_training = 0
    for i in range(4):
        since = time.time() - 0.01
        proc = subprocess.Popen(_cli(out, *(["--resume"] if i else [])), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i == 0:
            delay = rng.uniform(0.5, 1.2) * start_s
        else:
            _wait_for_training(out, proc, since)
            delay = rng.uniform(0.0, 0.25) * train_s
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        found = _check_outputs(out)
        print(f"kill {i}: after {delay:.2f} s, {found}")
        if found["step"] is not None and 0 < found["step"] < 1200:
            mid_training += 1
    assert mid_training >= 2, "fewer than 2 kills landed while training"
    _finish(out, reference)


@pytest.mark.slow
def test_sigkill_while_writing_then_resume_equals_uninterrupted(reference, tmp_path):
    out = tmp_path / "out"
    # Killed while writing the 3rd checkpoint: the 2nd stays, the torn temporary is hidden.
    r = subprocess.run(_killer(out, "ckpt", 3), env=ENV, capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL
    found = _check_outputs(out)
    assert found["files"] == ["checkpoint.pt"] and found["step"] == 200
    assert len(found["temps"]) == 1 and found["temps"][0].startswith(".checkpoint.pt.")
    # Resumed, then killed just before results.csv replaces its temporary: model.pt is
    # written, results.csv and sweep.json are not, the checkpoint is still there.
    r = subprocess.run(_killer(out, "results.csv", 0, "--resume"), env=ENV,
                       capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL
    found = _check_outputs(out)
    assert found["files"] == ["checkpoint.pt", "model.pt"]
    assert any(t.startswith(".results.csv.") for t in found["temps"])
    assert not any(t.startswith(".checkpoint.pt.") for t in found["temps"])  # cleaned
    _finish(out, reference)


@pytest.mark.slow
def test_same_command_twice_gives_a_bit_identical_results_csv(reference, tmp_path):
    out = tmp_path / "again"
    subprocess.run(_cli(out), env=ENV, check=True, capture_output=True, timeout=300)
    assert _table(out / "results.csv") == _table(reference / "results.csv")
    with open(out / "results.csv") as fh:
        assert next(csv.reader(fh))[-1] == "fault"


# ----------------------------------------------------------------- in-process determinism
@pytest.fixture(scope="module")
def data():
    return synthetic(n_samples=240, d0=4, d2=3, seed=1)


CONFIGS = {
    "adam-relu-minibatch": {"model": "relu", "sigma": "linear", "latent_dim": 2, "hidden": 6,
                            "batch_size": 32, "lr": 3e-3, "tol": 0.0, "check_every": 10,
                            "eval_samples": 4, "steps": 60},
    "adam-linear-moments": {"latent_dim": 3, "lr": 1e-2, "tol": 0.0, "check_every": 10,
                            "steps": 60},
    "lbfgs-linear": {"optimizer": "lbfgs", "dtype": "float64", "latent_dim": 3, "steps": 30,
                     "tol": 0.0},
}


def _csv_text(res) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS}
            for r in csv.DictReader(res.to_csv().splitlines())]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_twice_and_across_resume_bit_identical(data, tmp_path, name):
    kw = {"betas": [0.3, 1.0, 3.0], "seeds": [0, 1], "device": "cpu", **CONFIGS[name]}
    first = sweep(data, **kw)
    assert _csv_text(sweep(data, **kw)) == _csv_text(first)

    def stop(info):  # Ctrl-C at the 2nd check: the handler checkpoints, the loop stops
        if info.step == 2 * (kw.get("check_every") or 1):
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
        sweep(data, out=out, callback=stop, **kw)
    resumed = sweep(data, out=out, resume=True, **kw)
    assert _csv_text(resumed) == _csv_text(first)
    assert torch.equal(resumed.model.flat, first.model.flat)


# ----------------------------------------------------------------- unwritable output
@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permission bits do not stop root")
def test_read_only_out_is_refused_before_training(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main([*SWEEP_ARGS, "--out", str(ro / "sub")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--out" in err and "not writable" in err
    finally:
        ro.chmod(0o755)


def test_unwritable_out_is_one_line_before_any_training(tmp_path, capsys, monkeypatch):
    import postcollapse.train.loop as loop

    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(loop, "train", no_training)
    # A path under a file: no folder can be made there.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([*SWEEP_ARGS, "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "not writable" in err
    assert main([*SWEEP_ARGS, "--out", str(blocker)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err

    # A read-only file system (as root, chmod does not stop writes): the probe fails.
    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(pio.tempfile, "mkstemp", read_only)
    for argv in ([*SWEEP_ARGS, "--out", str(tmp_path / "a")],
                 ["reproduce", "fig4", "--preset", "test", "--out", str(tmp_path / "b")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "--out" in err and "not writable (Read-only file system)" in err
    with pytest.raises(OSError, match="out .* is not writable") as info:
        sweep("synthetic", betas=[1.0], steps=5, out=tmp_path / "c")
    assert info.value.errno == errno.EROFS


def test_full_disk_during_checkpoint_keeps_the_last_one(data, tmp_path, monkeypatch):
    """ENOSPC while writing a checkpoint: a one-line error, the previous checkpoint intact,
    no temporary left, and the resume finishes with the uninterrupted numbers."""
    kw = {"betas": [0.5, 2.0], "latent_dim": 2, "lr": 1e-2, "tol": 0.0, "check_every": 10,
          "steps": 80, "checkpoint_seconds": 0.0, "device": "cpu"}
    full = sweep(data, **kw)
    out = tmp_path / "out"
    real = torch.save
    calls = []

    def save(obj, f, *a, **k):
        calls.append(f)
        if len(calls) == 3:
            real(obj, f, *a, **k)  # a part was written, then the disk filled up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match=r"cannot write the checkpoint .*No space left on device"
                       r".*previous checkpoint is kept"):
        sweep(data, out=out, **kw)
    assert _temporaries(out) == []
    kept = torch.load(out / "checkpoint.pt", weights_only=True)
    assert kept["state"]["step"] == 20
    monkeypatch.setattr(torch, "save", real)
    resumed = sweep(data, out=out, resume=True, **kw)
    assert _csv_text(resumed) == _csv_text(full)


def test_full_disk_through_the_cli_is_one_line(tmp_path, capsys, monkeypatch):
    class FullDisk:  # the os module as _io sees it, with a disk that takes no byte
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def write(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pio, "os", FullDisk())
    assert main([*SWEEP_ARGS, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not writable (No space left on device)" in err


# ----------------------------------------------------------------- training faults
BAD = 1  # the member that fails (beta 1.0)
# Adam (the optimizer whose faults these are: L-BFGS has no learning rate to get wrong).
FAULT_KW = {"optimizer": "adam", "betas": [0.5, 1.0, 2.0], "latent_dim": 2, "lr": 1e-2,
            "tol": 0.0,
            "check_every": 10, "steps": 80, "device": "cpu"}


def _without_bad(**extra):
    """The same sweep without the bad member: betas 0.5 and 2.0 only."""
    return sweep(DATA_FAULT, **{**FAULT_KW, "betas": [0.5, 2.0], **extra})


DATA_FAULT = synthetic(n_samples=240, d0=4, d2=3, seed=1)


def _others_unchanged(hit, clean):
    rows = [r for i, r in enumerate(hit.rows) if i != BAD]
    got = [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows]
    want = [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in clean.rows]
    assert got == want  # exact: floats compared bit for bit


@pytest.mark.parametrize("fault", ["inf-parameters", "nan-parameters", "non-finite-batch"])
def test_a_failing_member_is_reported_and_the_others_are_a_sweep_without_it(fault,
                                                                            monkeypatch):
    clean = _without_bad()
    if fault == "non-finite-batch":  # the loss of one member's batch at step 30 is NaN
        from postcollapse.train.data import Objective

        real_call = Objective.__call__

        def call(self, params, step):
            parts = real_call(self, params, step)
            if step == 30:
                poison = torch.zeros_like(parts.loss)
                poison[BAD] = float("nan")
                parts = parts._replace(loss=parts.loss + poison)
            return parts

        monkeypatch.setattr(Objective, "__call__", call)
        callback = None
    else:
        value = float("inf") if fault == "inf-parameters" else float("nan")

        def callback(info):
            if info.step == 30:
                with torch.no_grad():
                    info.model.flat[BAD].fill_(value)

    hit = sweep(DATA_FAULT, callback=callback, **FAULT_KW)
    assert hit.column("diverged").tolist() == [False, True, False]
    assert hit.rows[BAD]["steps"] == 30 and not hit.rows[BAD]["converged"]
    assert hit.rows[BAD]["fault"] == "non-finite loss after 30 steps"
    _others_unchanged(hit, clean)


def test_a_learning_rate_far_too_large_is_a_fault_of_every_member():
    for lr, text in ((1e4, "non-finite loss after"), (1e2, "loss rose from")):
        res = sweep(DATA_FAULT, **{**FAULT_KW, "lr": lr, "dtype": "float32"})
        assert res.column("diverged").all(), lr
        assert all(r["fault"].startswith(text) for r in res.rows), [r["fault"] for r in res.rows]
    ok = sweep(DATA_FAULT, **FAULT_KW)
    assert not ok.column("diverged").any() and all(r["fault"] == "" for r in ok.rows)


def test_cli_exit_status_and_summary_count_the_failed_members(tmp_path, capsys):
    base = ["sweep", "synthetic", "--betas", "0.5,1,2", "--seeds", "2", "--steps", "60",
            "--quiet", "--device", "cpu", "--optimizer", "adam"]
    assert main([*base, "--lr", "1e4", "--out", str(tmp_path / "bad")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("postcollapse sweep: 6 of 6 members diverged (beta=0.5 seed=0")
    assert "and 3 more" in err[0] and "smaller --lr" in err[0]
    rows = _table(tmp_path / "bad" / "results.csv")
    assert all(r["diverged"] == "True" and r["fault"] for r in rows)
    assert main([*base, "--out", str(tmp_path / "good")]) == 0
    assert capsys.readouterr().err == ""


def test_reproduce_exit_status_counts_diverged_members(tmp_path, capsys, monkeypatch):
    from postcollapse.cli import reproduce_cmd

    class Fig:
        def __init__(self, name, n_div, n_rows):
            self.name, self.n_diverged, self.n_rows = name, n_div, n_rows

    class Summary:
        figures = [Fig("fig1", 2, 20), Fig("fig4", 0, 10)]
        wall_seconds = 1.0

    import postcollapse.reproduce as rep

    monkeypatch.setattr(rep, "reproduce", lambda *a, **k: Summary())
    monkeypatch.setattr(reproduce_cmd, "summary_lines", lambda s: [])
    assert main(["reproduce", "--preset", "paper", "--out", str(tmp_path), "-q"]) == 3
    err = capsys.readouterr().err
    assert err.strip() == ("postcollapse reproduce: 2 of 30 members diverged (fig1: 2 of 20); "
                           "see the diverged and fault columns of OUT/FIG/sweep/results.csv "
                           "and the report")
    Summary.figures = [Fig("fig4", 0, 10)]
    assert main(["reproduce", "--preset", "paper", "--out", str(tmp_path), "-q"]) == 0


def test_data_beyond_float32_is_refused_before_training(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(50, 3))
    x[7, 1] = 1e39  # finite in float64, inf in float32
    np.save(tmp_path / "x.npy", x)
    argv = ["sweep", str(tmp_path / "x.npy"), "--betas", "1", "--steps", "5", "--quiet",
            "--device", "cpu", "--optimizer", "adam"]
    assert main([*argv, "--out", str(tmp_path / "o32")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "beyond the range of float32" in err
    assert "--dtype float64" in err
    assert main([*argv, "--dtype", "float64", "--out", str(tmp_path / "o64")]) in (0, 3)


def test_stale_temporaries_are_removed_and_others_kept(tmp_path):
    for name in (".checkpoint.pt.ab12.tmp.pt", ".results.csv.zz.tmp", ".sweep.json.q.tmp",
                 ".model.pt.x1.tmp.pt", "notes.txt", ".other.tmp"):
        (tmp_path / name).write_text("half")
    removed = pio.remove_temporaries(tmp_path, OUTPUT_FILES)
    assert len(removed) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp", "notes.txt"]


class _Evil:
    """Unpickling this would create a file (never happens: weights_only refuses it)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickled-object"])
def test_a_damaged_or_hostile_checkpoint_is_one_line_on_resume(tmp_path, capsys, damage):
    argv = ["sweep", "synthetic", "--betas", "1", "--steps", "20", "--quiet", "--device", "cpu",
            "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    good = (tmp_path / "o" / "model.pt").read_bytes()
    ck = tmp_path / "o" / "checkpoint.pt"
    marker = tmp_path / "pwned"
    if damage == "truncated":
        ck.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        ck.write_bytes(b"not a checkpoint")
    else:
        torch.save({"flat": _Evil(marker)}, ck)
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.pt is not a readable checkpoint" in err, err
    assert not marker.exists()
    if damage == "pickled-object":
        assert "refused to unpickle" in err
        (tmp_path / "o" / "checkpoint.pt").unlink()
        torch.save({"config": _Evil(marker), "flat": torch.zeros(1)}, tmp_path / "o" / "model.pt")
        from postcollapse.train import load_sweep

        with pytest.raises(ValueError, match="model.pt is not a readable sweep model"):
            load_sweep(tmp_path / "o")
        assert not marker.exists()


def test_full_disk_when_writing_results_keeps_the_checkpoint(data, tmp_path, monkeypatch):
    import postcollapse.train.results as results

    kw = {"betas": [0.5, 2.0], "latent_dim": 2, "lr": 1e-2, "tol": 0.0, "check_every": 10,
          "steps": 50, "checkpoint_seconds": 0.0, "device": "cpu"}
    full = sweep(data, **kw)
    out = tmp_path / "out"
    real = results.atomic_write_text

    def no_space(path, text):
        with pio.atomic_path(path) as tmp:
            tmp.write_text(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "atomic_write_text", no_space)
    with pytest.raises(OSError, match=r"cannot write the results in .*No space left on device"
                       r".*checkpoint of step 50 is kept.*resume"):
        sweep(data, out=out, **kw)
    assert _temporaries(out) == [] and not (out / "results.csv").exists()
    assert not (out / "sweep.json").exists()  # the folder does not claim a finished sweep
    monkeypatch.setattr(results, "atomic_write_text", real)
    resumed = sweep(data, out=out, resume=True, **kw)
    assert _csv_text(resumed) == _csv_text(full)
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "results.csv", "sweep.json"]
