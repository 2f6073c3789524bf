"""postcollapse reproduce: grids, the collapse-reading rule, report consistency, CLI.

The fast tests replace the sweep by a stub built from the closed-form theory (so that the
orchestration, the files and the report are checked in a second); the slow tests run the
real sweep engine end to end with the hidden ``test`` preset.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import postcollapse.reproduce as rp
from postcollapse.cli import main
from postcollapse.reproduce import beta_grid, read_collapse, sample_betas
from postcollapse.reproduce.reading import parse_flag, rows_to_arrays
from postcollapse.reproduce.runs import RunContext, run_sweep

ZETA2 = np.array([14.0, 8.0, 4.5, 2.0, 0.8])


# ------------------------------------------------------------------- grids and reading


def test_beta_grid_spans_thresholds_and_brackets():
    g = beta_grid(ZETA2, n=10, lo=0.1, hi=2.0, bracket=(0.9, 1.1), bracket_modes=2)
    assert np.all(np.diff(g) > 0)
    np.testing.assert_allclose(g[[0, -1]], [0.08, 28.0])
    for b in (0.9 * 14, 1.1 * 14, 0.9 * 8, 1.1 * 8):
        assert np.isclose(g, b).any()
    assert not np.isclose(g, 0.9 * 4.5).any()
    assert g.size == 14
    with pytest.raises(ValueError, match="thresholds are all zero"):
        beta_grid([0.0, 0.0], n=5)


def test_sample_betas_keep_k_modes():
    from postcollapse.theory import active_modes

    chosen = sample_betas(ZETA2, latent_dim=5)
    assert [k for k, _ in chosen] == [5, 4, 3, 2, 1, 0]
    for k, b in chosen:
        assert active_modes(np.sqrt(ZETA2), b, latent_dim=5) == k
    np.testing.assert_allclose(chosen[1][1], math.sqrt(0.8 * 2.0))


def _row(beta, seed, active, loss=1.0):
    return {"beta": beta, "seed": seed, "loss": loss, "active_units": active}


def test_rows_to_arrays_sorts_and_drops_diverged():
    rows = [
        {"beta": 2.0, "seed": 0, "loss": 1.0, "active_units": 1, "sigma_1": 0.9, "sigma_2": 0.1},
        {"beta": 1.0, "seed": 1, "loss": 2.0, "active_units": 2, "sigma_1": 0.8, "sigma_2": 0.3},
        {"beta": 1.0, "seed": 0, "loss": float("nan"), "active_units": 2, "sigma_1": 1,
         "sigma_2": 1},
        {"beta": 3.0, "seed": 0, "loss": 5.0, "diverged": True, "active_units": 0,
         "sigma_1": 1, "sigma_2": 1},
    ]
    a = rows_to_arrays(rows, latent_dim=2)
    np.testing.assert_array_equal(a["beta"], [1.0, 2.0])
    np.testing.assert_array_equal(a["seed"], [1, 0])
    np.testing.assert_array_equal(a["sigma"], [[0.3, 0.8], [0.1, 0.9]])  # ascending per row


def test_parse_flag_reads_csv_text_numbers_and_bools():
    for v in (True, 1, 2.0, "True", "true", " TRUE ", "1", "yes"):
        assert parse_flag(v) is True, v
    for v in (False, 0, 0.0, None, "False", "false", "0", "", "no"):
        assert parse_flag(v) is False, v


def test_read_collapse_rule():
    rows = [_row(1, 0, 5), _row(10, 0, 1), _row(13, 0, 0), _row(15, 0, 1), _row(20, 0, 0),
            _row(30, 0, 0), _row(1, 1, 5), _row(10, 1, 2), _row(13, 1, 0), _row(15, 1, 0),
            _row(20, 1, 0), _row(30, 1, 0)]
    r = read_collapse(rows, ZETA2, latent_dim=5)
    # 13 has 0 everywhere but 15 still has an active unit (seed 0): observed = 20.
    assert r.observed == 20 and r.lower == 15
    assert r.predicted == 14 and math.isclose(r.rel_error, 6 / 14)
    assert r.betas == [1, 10, 13, 15, 20, 30]
    assert r.predicted_active == [4, 1, 1, 0, 0, 0]
    assert r.observed_active == [5, 1.5, 0, 0.5, 0, 0]
    assert r.observed_active_min[1] == 1 and r.observed_active_max[1] == 2


def test_read_collapse_not_reached_and_diverged_rows():
    rows = [_row(1, 0, 3), _row(30, 0, 1), _row(40, 0, 0, loss=float("nan"))]
    r = read_collapse(rows, ZETA2, latent_dim=5)
    assert r.observed is None and r.lower == 30 and r.rel_error is None
    with pytest.raises(ValueError, match="no finite sweep rows"):
        read_collapse([_row(1, 0, 1, loss=float("inf"))], ZETA2, latent_dim=5)


def test_prose_ships_for_every_preset_and_figure():
    from postcollapse._checks import ACTIVE_VAR_THRESHOLD
    from postcollapse.reproduce.prose import prose, titles

    for preset in rp.PRESETS:
        assert prose(f"notes_{preset}").startswith(f"Preset {preset} ")
    assert sorted(titles()) == sorted(rp.FIGURES)
    assert f"exceeds {ACTIVE_VAR_THRESHOLD} (Burda" in rp.COLLAPSE_RULE
    assert "\n" not in rp.COLLAPSE_RULE and "  " not in rp.COLLAPSE_RULE
    assert prose("no_such_text") == ""


def test_records_to_json_turns_nan_into_null_and_keeps_kind():
    from postcollapse.reproduce.records import DataInfo, jsonable

    gaps = rp.TheoryGaps(loss=math.nan, loss_signed=math.nan, loss_beta=math.nan,
                         sigma=0.5, sigma_beta=np.float64(2.0))
    reading = read_collapse([_row(1, 0, 1), _row(30, 0, 0)], ZETA2, latent_dim=5)
    rec = rp.SweepFigure(
        name="fig4", title="t", config=rp.figure_config("fig4", "test"),
        data=DataInfo(name="d", n_samples=3, d0=2, d2=2), zeta=[1.0], thresholds=[1.0],
        betas=[1.0, 30.0], train_seconds=1.0, device="cpu", files=[], wall_seconds=1.0,
        collapse=reading, collapse_tolerance=0.15, collapse_within_tolerance=False,
        gaps=gaps, linear=True, n_rows=2, n_converged=2, n_diverged=0,
        n_active_agree=reading.n_active_agree)
    j = rec.to_json()
    assert j["kind"] == "sweep" and j["gaps"]["loss"] is None and j["gaps"]["sigma"] == 0.5
    assert j["config"]["seeds"] == [0] and j["collapse"]["observed"] == 30.0
    assert json.loads(json.dumps(j)) == j
    assert jsonable((np.int64(3), math.inf)) == [3, None]


def test_presets_and_bad_arguments(tmp_path):
    quick = rp.figure_config("fig2", "quick")
    paper = rp.figure_config("fig2", "paper")
    assert paper.hidden == 2048 and paper.lr == 1e-4 and quick.hidden < paper.hidden
    assert rp.figure_config("fig1", "paper").lr == 1e-3
    assert rp.figure_config("fig4", "quick").model == "linear"
    assert rp.figure_config("fig5", "quick", seeds=3).seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="preset must be one of"):
        rp.figure_config("fig1", "fast")
    with pytest.raises(ValueError, match="figure must be one of"):
        rp.reproduce("fig9", out=tmp_path)
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda"):
        rp.reproduce("fig1", out=tmp_path, device="tpu")


# ------------------------------------------------------- orchestration with a stub sweep


class _StubResult:
    def __init__(self, rows, members, model):
        self.rows, self.members, self.model = rows, members, model


def _stub_sweep(calls):
    """A trainer that returns the closed-form optimum (ReLU: collapse 10% late)."""
    import torch

    from postcollapse.figures import theory_sigma
    from postcollapse.theory import min_loss, spectrum

    def fake(ds, *, betas, model, latent_dim, seeds, out, **options):
        calls.append((Path(out).parent.name, len(betas)))
        sweep_dir = Path(out)
        spec = spectrum(ds.moments())
        z = spec.zeta_padded(latent_dim)
        late = 1.0 if model == "linear" else 1.1
        rows, members = [], []
        lstar = min_loss(spec, betas, latent_dim=latent_dim)
        for b, lb, s in zip(betas, lstar, theory_sigma(z, betas), strict=True):
            for seed in seeds:
                r = {"beta": float(b), "seed": seed, "loss": float(lb),
                     "active_units": int(np.sum(z**2 * late > b)),
                     "converged": True, "diverged": False}
                r.update({f"sigma_{i + 1}": v for i, v in enumerate(np.sort(s)[::-1])})
                rows.append(r)
                members.append((float(b), seed))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(sweep_dir / "results.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

        class Dec(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(latent_dim, ds.d2))

            def decode(self, zz):
                return torch.sigmoid(zz @ self.w)

        return _StubResult(rows, members, Dec())

    return fake


def _check_outputs(out: Path, summary: dict) -> None:
    """Every figure's files exist and the report's numbers follow from results.csv."""
    report = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert summary == json.loads((out / "summary.json").read_text())
    assert "How observed collapse is read" in report and "Burda" in report
    ext = summary.get("extensions")
    assert html.count('src="data:image/png;base64,') == len(summary["figures"]) + bool(ext)
    for rel in (ext or {}).get("files", []):
        assert (out / rel).is_file(), rel
    for f in summary["figures"]:
        for rel in f["files"]:
            assert (out / rel).is_file(), rel
        assert (out / f["name"] / f"{f['name']}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f["name"] / f"{f['name']}.pdf").read_bytes()[:4] == b"%PDF"
        if f["kind"] != "sweep":
            with open(out / f["name"] / f"{f['name']}.csv") as fh:
                rows = list(csv.DictReader(fh))
            assert sorted({float(r["beta"]) for r in rows}) == sorted(f["betas"])
            assert f"{f['n_agree']} of {len(f['betas'])}" in report
            continue
        with open(out / f["name"] / "sweep" / "results.csv") as fh:
            rows = list(csv.DictReader(fh))
        reading = read_collapse(rows, f["thresholds"], latent_dim=f["config"]["latent_dim"])
        c = f["collapse"]
        assert c["observed"] == reading.observed and c["lower"] == reading.lower
        assert c["observed_active"] == reading.observed_active
        assert math.isclose(c["predicted"], f["thresholds"][0])
        obs = "n/a" if reading.observed is None else f"{reading.observed:.4g}"
        line = re.search(rf"^\| {f['name']} \| .*$", report, re.M).group(0)
        assert f"| {c['predicted']:.4g} | {obs} |" in line
        # The figure CSV holds exactly the finite rows of results.csv.
        with open(out / f["name"] / f"{f['name']}.csv") as fh:
            figrows = list(csv.DictReader(fh))
        finite = [r for r in rows if math.isfinite(float(r["loss"]))
                  and str(r.get("diverged", "False")).lower() not in ("true", "1")]
        assert len(figrows) == len(finite)
        assert sorted(float(r["loss"]) for r in figrows) == pytest.approx(
            sorted(float(r["loss"]) for r in finite), rel=1e-12)
        if f["linear"]:
            assert f"trained and theoretical loss: {f['gaps']['loss']:.2e}" in report


def test_reproduce_with_stub_sweep(tmp_path):
    calls = []
    stub = _stub_sweep(calls)
    logs = []
    result = rp.reproduce(["fig4", "fig3"], out=tmp_path, preset="test", log=logs.append,
                          trainer=stub)
    assert [c[0] for c in calls] == ["fig3", "fig4"]
    assert any("fig4" in m and "predicted complete collapse" in m for m in logs)
    summary = result.to_json()
    _check_outputs(tmp_path, summary)
    # The records are typed: the JSON is read from them.
    fig4 = result.figures[1]
    assert isinstance(fig4, rp.SweepFigure) and isinstance(fig4.collapse, rp.CollapseReading)
    assert isinstance(result.figures[0], rp.SamplesFigure)
    assert summary["figures"][1]["kind"] == "sweep" and summary["figures"][0]["kind"] == "samples"
    by = {f["name"]: f for f in summary["figures"]}
    # Stub: the linear model sits at the theory exactly.
    assert by["fig4"]["gaps"]["loss"] < 1e-12 and by["fig4"]["gaps"]["sigma"] < 1e-12
    assert by["fig4"]["collapse"]["rel_error"] == pytest.approx(0.07, abs=1e-9)
    assert by["fig3"]["observed_active"][0] == 5 and by["fig3"]["theory_modes"][-1] == 0
    # fig3's decoded samples are cached: a second run does not call the sweep for it.
    calls.clear()
    rp.reproduce("fig3", out=tmp_path, preset="test", trainer=stub)
    assert calls == []


def test_cli_reproduce_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "fig9"])
    assert e.value.code == 2
    assert "invalid choice: 'fig9'" in capsys.readouterr().err
    assert main(["reproduce", "fig1", "--seeds", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "postcollapse reproduce: error: --seeds must be >= 1, got 0"
    assert main(["reproduce", "fig1", "--device", "tpu", "--out", str(tmp_path)]) == 2
    assert "device must be auto, cpu or cuda" in capsys.readouterr().err


def test_cli_reproduce_with_stub_sweep(capsys, tmp_path, monkeypatch):
    import postcollapse.train as train

    monkeypatch.setattr(train, "sweep", _stub_sweep([]))
    assert main(["reproduce", "fig4", "--preset", "test", "--out", str(tmp_path)]) == 0
    cap = capsys.readouterr()
    assert "fig4: complete collapse predicted 14" in cap.out and "loss gap" in cap.out
    assert "[fig4]" in cap.err  # progress lines on stderr
    assert (tmp_path / "report.html").is_file()


def test_cli_help_subprocess_does_not_import_torch():
    code = ("import sys; from postcollapse.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.split() == ["False", "False"], r.stderr
    r = subprocess.run([sys.executable, "-m", "postcollapse", "reproduce", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--preset" in r.stdout and "fig5" in r.stdout


# ----------------------------------------------------------- end to end, real sweeps


@pytest.mark.slow
def test_reproduce_end_to_end_cli_subprocess(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "postcollapse", "reproduce", "all", "--preset", "test",
           "--out", str(tmp_path), "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "report:" in r.stdout and "[fig2]" in r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    _check_outputs(tmp_path, summary)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/sweep/results.csv")}
    # Same --out again: every sweep resumes, nothing is retrained, numbers unchanged.
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r2.returncode == 0, r2.stderr[-2000:]
    again = json.loads((tmp_path / "summary.json").read_text())
    for f, g in zip(summary["figures"], again["figures"], strict=True):
        assert f.get("collapse") == g.get("collapse") and f.get("gaps") == g.get("gaps")
        # The training time is the one recorded by the first run, not a new measurement.
        assert f["train_seconds"] == g["train_seconds"]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_every_preset_is_accepted_by_the_sweep_engine():
    import inspect

    import postcollapse.train as train

    sig = inspect.signature(train.sweep)
    seen = []

    def capture(data, **kwargs):
        sig.bind(data, **kwargs)  # raises TypeError on a misnamed argument
        seen.append(kwargs)

    ctx = RunContext(out=Path("."), trainer=capture, device="cpu")
    for preset in ("quick", "paper", "test"):
        for fig in rp.FIGURES:
            cfg = rp.figure_config(fig, preset)
            assert (cfg.steps is None) != (cfg.epochs is None), (preset, fig)
            if cfg.optimizer == "lbfgs":  # needs an exact loss and full batch
                assert cfg.model == "linear" and cfg.batch_size is None
            run_sweep(ctx, cfg, "data", [1.0, 2.0], Path("sweep"))
            assert seen[-1]["resume"] is True and seen[-1]["out"] == Path("sweep")
    assert len(seen) == 15
