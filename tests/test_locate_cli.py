"""postcollapse locate: output formats and one-line errors (stub trainer, no training)."""

from __future__ import annotations

import functools
import json

import pytest

import postcollapse.locate as locate_pkg
from postcollapse.cli import main
from postcollapse.theory import spectrum, thresholds
from test_locate import StepTrainer


@pytest.fixture
def stub(monkeypatch):
    from postcollapse.data import load

    pred = thresholds(spectrum(load("synthetic").moments()))[:5]
    tr = StepTrainer(pred * 0.97)
    monkeypatch.setattr(locate_pkg, "locate", functools.partial(locate_pkg.run.locate,
                                                                trainer=tr))
    return tr, pred


def test_json_output(stub, tmp_path, capsys):
    tr, pred = stub
    assert main(["locate", "synthetic", "--json", "--quiet", "--out", str(tmp_path)]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert [m["mode"] for m in obj["modes"]] == [1, 2, 3, 4, 5]
    for m, p in zip(obj["modes"], pred, strict=True):
        assert m["predicted"] == pytest.approx(p, rel=1e-12)
        assert m["lower"] < 0.97 * p <= m["upper"]
        assert m["rel_error"] == pytest.approx(m["observed"] / p - 1, rel=1e-12)
    assert (tmp_path / "thresholds.csv").exists() and (tmp_path / "locate.json").exists()


def test_table_output_and_progress_on_stderr(stub, tmp_path, capsys):
    assert main(["locate", "synthetic", "--seeds", "2", "--out", str(tmp_path)]) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert lines[0].split()[:4] == ["mode", "predicted", "observed", "lower"]
    assert len(lines) == 7 and "thresholds.csv" in lines[-1]
    assert "locate round 1" in cap.err


@pytest.mark.parametrize("argv, match", [
    (["--rtol", "0"], "rtol"),
    (["--rtol", "2"], "rtol must be below 1"),
    (["--seeds", "0"], "--seeds"),
    (["--model", "cnn"], "model must be one of"),
    (["--sigma", "wide"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(stub, tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) if "--sigma" in argv else _nullcontext():
        code = main(["locate", "synthetic", "--quiet", "--out", str(tmp_path), *argv])
        assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err


def test_missing_data_file(tmp_path, capsys):
    assert main(["locate", str(tmp_path / "nope.npz"), "--quiet",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("postcollapse locate: error:")


def test_resume_without_finished_rounds_starts_fresh(stub, tmp_path, capsys):
    assert main(["locate", "synthetic", "--quiet", "--resume", "--json",
                 "--out", str(tmp_path)]) == 0
    assert len(json.loads(capsys.readouterr().out)["modes"]) == 5


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False




@pytest.fixture
def spy(monkeypatch):
    """locate replaced by a recorder of its keyword arguments (no training at all)."""
    seen = {}

    def fake(data, **kwargs):
        seen.update(kwargs, data=data)
        from postcollapse.locate import LocateResult

        return LocateResult(modes=[], rounds=[], config={}, data={}, done=True)

    monkeypatch.setattr(locate_pkg, "locate", fake)
    return seen


@pytest.mark.parametrize("argv, expect", [
    (["--eta-dec", "learn"], {"eta_dec": "learn"}),
    (["--levels", "2", "--beta2", "3", "--sigma1", "0.5", "--latent-dim2", "2"],
     {"levels": 2, "beta2": 3.0, "sigma1": 0.5, "latent_dim2": 2}),
    (["--free-bits", "0.1", "--free-bits-mode", "batch", "--batch-size", "100"],
     {"free_bits": 0.1, "free_bits_mode": "batch", "batch_size": 100}),
    (["--eta-enc", "2", "--epochs", "3", "--tol", "1e-9", "--lr-decay", "none"],
     {"eta_enc": 2.0, "epochs": 3, "tol": 1e-9, "lr_decay": None}),
])
def test_the_sweep_options_reach_locate(spy, tmp_path, argv, expect):
    assert main(["locate", "synthetic", "--quiet", "--out", str(tmp_path), *argv]) == 0
    assert {k: spy[k] for k in expect} == expect
    assert "trainer" not in spy  # in process: locate's default trainer


def test_the_same_option_definitions_as_the_sweep():
    """One definition (cli/options.py): every model / training option of the sweep is
    locate's too, with the same default."""
    from test_cli_help import _COMMANDS

    def opts(name):
        return {a.dest: a.default for a in _COMMANDS[name]._actions if a.option_strings}

    sweep, loc = opts("sweep"), opts("locate")
    only_sweep = {"betas", "log_betas", "threads", "checkpoint_seconds"}
    assert set(sweep) - set(loc) == only_sweep
    for k in set(sweep) - only_sweep - {"active_threshold", "out", "resume", "quiet"}:
        assert loc[k] == sweep[k], k


def test_free_bits_mode_without_free_bits_is_one_line(tmp_path, capsys):
    assert main(["locate", "synthetic", "--quiet", "--out", str(tmp_path),
                 "--free-bits-mode", "batch"]) == 2
    assert "--free-bits-mode needs --free-bits" in capsys.readouterr().err


def test_workers_train_on_a_cluster(spy, tmp_path):
    from postcollapse.scale import ClusterTrainer

    assert main(["locate", "synthetic", "--quiet", "--out", str(tmp_path),
                 "--workers", "1", "--worker-threads", "2", "--cell-betas", "4"]) == 0
    tr = spy["trainer"]
    assert isinstance(tr, ClusterTrainer) and (tr.threads, tr.cell_betas) == (2, 4)
