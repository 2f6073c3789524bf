"""Commands on a Dask cluster (--workers / --scheduler), Parquet and .npy-shard data,
distributed sweeps that keep their cells, survive a killed worker and resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from postcollapse.cli import main
from postcollapse.data.parquet import parquet_moments, read_parquet
from postcollapse.scale import plan_cells
from postcollapse.theory import Moments

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

RTOL = 1e-10
SWEEP = ["synthetic", "--betas", "0.3,1,3,8", "--seeds", "2", "--latent-dim", "3",
         "--steps", "200", "--dtype", "float64", "--tol", "0", "--quiet"]
INT_COLUMNS = {"seed", "active_units", "active_modes", "converged", "diverged", "steps",
               "theory_active", "fault"}  # compared exactly (fault is text)


def _matrix(n=3000, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 50.0


def _write_parquet(folder, x, *, files=2, row_group=400, extra=None):
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(x), files + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        cols = {f"c{j}": x[lo:hi, j] for j in range(x.shape[1])}
        if extra is not None:
            cols.update({k: v[lo:hi] for k, v in extra.items()})
        pq.write_table(pa.table(cols), folder / f"part-{i}.parquet", row_group_size=row_group)
    return folder


def _json_of(capsys, argv):
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _same_thresholds(a: dict, b: dict):
    assert (a["n_samples"], a["d0"], a["d2"], a["rank"]) == (b["n_samples"], b["d0"], b["d2"],
                                                           b["rank"])
    np.testing.assert_allclose(a["zeta2"], b["zeta2"], rtol=RTOL)
    # residual: 0 up to rounding for a plain VAE, so compared on the scale of the signal
    np.testing.assert_allclose(a["residual"], b["residual"], rtol=RTOL,
                               atol=RTOL * sum(b["zeta2"]))


# ------------------------------------------------------------------ without a cluster
@pytest.mark.parametrize("argv", [
    ["thresholds", "synthetic", "--workers", "2"],
    ["optimum", "synthetic", "--latent-dim", "2", "--beta", "1", "--scheduler", "tcp://x:1"],
    ["sweep", "synthetic", "--betas", "1", "--steps", "1", "--workers", "2"],
])
def test_cluster_flags_without_dask_say_how_to_install(monkeypatch, capsys, argv, tmp_path):
    monkeypatch.chdir(tmp_path)
    for mod in ("dask", "distributed"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'postcollapse[scale]'" in err


def test_parquet_thresholds_equal_the_same_data_as_npy(tmp_path, capsys):
    x = _matrix()
    np.save(tmp_path / "x.npy", x)
    _write_parquet(tmp_path / "pq", x, extra={"name": np.array(["a"] * len(x))})
    ref = _json_of(capsys, ["thresholds", str(tmp_path / "x.npy"), "--json"])
    got = _json_of(capsys, ["thresholds", str(tmp_path / "pq"), "--json"])
    _same_thresholds(got, ref)  # the string column is skipped by default
    one = _json_of(capsys, ["thresholds", str(tmp_path / "pq" / "part-0.parquet"), "--json"])
    assert one["n_samples"] == 1500
    # a conditional VAE from columns equals the same split as arrays
    cond = _json_of(capsys, ["optimum", str(tmp_path / "pq"), "--columns", "c0,c1,c2",
                             "--target-columns", "c3,c4", "--latent-dim", "2", "--beta", "0.5",
                             "--json"])
    src, m = parquet_moments(tmp_path / "pq", columns="c0,c1,c2", target_columns=["c3", "c4"])
    ref_m = Moments.from_arrays(x[:, :3], x[:, 3:])
    np.testing.assert_allclose(m.m_xx, ref_m.m_xx, rtol=RTOL)
    np.testing.assert_allclose(m.m_yx, ref_m.m_yx, rtol=RTOL, atol=RTOL * np.abs(ref_m.m_yx).max())
    assert (cond["d0"], cond["d2"], cond["plain"]) == (3, 2, False) and not src.plain
    xr, yr = read_parquet(tmp_path / "pq", columns="c0,c1,c2", target_columns="c3,c4")
    np.testing.assert_array_equal(xr, x[:, :3])
    np.testing.assert_array_equal(yr, x[:, 3:])


def test_npy_shards_folder_and_glob_equal_one_file(tmp_path, capsys):
    x = _matrix()
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "shards").mkdir()
    for i, part in enumerate(np.array_split(x, 3)):
        np.save(tmp_path / "shards" / f"s{i}.npy", part)
    ref = _json_of(capsys, ["thresholds", str(tmp_path / "x.npy"), "--json"])
    _same_thresholds(_json_of(capsys, ["thresholds", str(tmp_path / "shards"), "--json"]), ref)
    glob_ = str(tmp_path / "shards" / "s*.npy")
    _same_thresholds(_json_of(capsys, ["thresholds", glob_, "--json"]), ref)
    # a target given as shards too: one target shard per input shard
    (tmp_path / "targets").mkdir()
    for i, part in enumerate(np.array_split(x[:, :2] * 3.0 - 1.0, 3)):
        np.save(tmp_path / "targets" / f"t{i}.npy", part)
    np.save(tmp_path / "y.npy", x[:, :2] * 3.0 - 1.0)
    ref = _json_of(capsys, ["thresholds", str(tmp_path / "x.npy"), "--target",
                            str(tmp_path / "y.npy"), "--json"])
    got = _json_of(capsys, ["thresholds", str(tmp_path / "shards"), "--target",
                            str(tmp_path / "targets"), "--json"])
    assert got["plain"] is False and got["d2"] == 2
    _same_thresholds(got, ref)


def test_parquet_nulls_and_other_numeric_types(tmp_path, capsys):
    n = 200
    table = pa.table({"i": pa.array(np.arange(n)), "b": pa.array(np.arange(n) % 3 == 0),
                      "f": pa.array(np.sin(np.arange(n)), pa.float32())})
    pq.write_table(table, tmp_path / "t.parquet")
    got = _json_of(capsys, ["thresholds", str(tmp_path / "t.parquet"), "--json"])
    x = np.column_stack([np.arange(n), np.arange(n) % 3 == 0,
                         np.sin(np.arange(n)).astype(np.float32)]).astype(np.float64)
    np.save(tmp_path / "t.npy", x)
    _same_thresholds(got, _json_of(capsys, ["thresholds", str(tmp_path / "t.npy"), "--json"]))
    vals = [1.0] * n
    vals[17] = None
    pq.write_table(pa.table({"a": np.arange(n, dtype=float), "v": pa.array(vals)}),
                   tmp_path / "null.parquet")
    assert main(["thresholds", str(tmp_path / "null.parquet")]) == 2
    assert "null.parquet: row 17 (row 17 of the data), column 'v'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["--columns", "c0,nope"], r"part-0\.parquet has no column 'nope'"),
    (["--columns", "c0,name"], r"column 'name' is not numeric"),
    (["--target-columns", "c9"], r"has no column 'c9'"),
])
def test_parquet_bad_columns_are_one_line(tmp_path, capsys, argv, match):
    x = _matrix(n=100)
    _write_parquet(tmp_path / "pq", x, extra={"name": np.array(["a"] * len(x))})
    assert main(["thresholds", str(tmp_path / "pq"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert __import__("re").search(match, err), err


def test_parquet_nan_cell_names_file_row_and_column(tmp_path, capsys):
    x = _matrix(n=1000)
    x[777, 2] = np.nan  # file part-1 holds rows 500.., so row 277 of that file
    _write_parquet(tmp_path / "pq", x, row_group=100)
    assert main(["thresholds", str(tmp_path / "pq")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "part-1.parquet: row 277 (row 777 of the data), column 'c2'" in err


def test_columns_need_parquet(tmp_path, capsys):
    assert main(["thresholds", "synthetic", "--columns", "a"]) == 2
    assert "Parquet" in capsys.readouterr().err


def test_plan_cells_cover_every_member_once():
    for n_betas, seeds, cb in [(40, [0], None), (5, [0, 1, 2], None), (7, range(9), None),
                               (7, [3, 5], 3)]:
        cells = plan_cells(n_betas, seeds, cell_betas=cb)
        members = [(b, c["seed"]) for c in cells for b in range(*c["betas"])]
        assert sorted(members) == sorted((b, s) for b in range(n_betas) for s in seeds)
        if cb is None:
            assert len(cells) >= min(8, n_betas * len(list(seeds)))
        else:
            assert all(c["betas"][1] - c["betas"][0] <= cb for c in cells)


# ------------------------------------------------------------------ on a cluster
@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c, Client(c) as client:
        yield c, client


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert main(["sweep", *SWEEP, "--out", str(out)]) == 0
    return out


def _rows(out):
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


#: Columns that hold text (the optimizer and dtype used, a failed member's fault).
TEXT_COLUMNS = ("optimizer", "dtype", "fault")


def _assert_same_sweep(out, ref):
    """Rows equal: integers and flags exactly, floats to 1e-12 (the final evaluation of a
    batch of members can round differently in the last bit with the batch size); the
    sweep.json (config, data, theory, members, fingerprint) identical."""
    a, b = _rows(out), _rows(ref)
    assert len(a) == len(b) and list(a[0]) == list(b[0])
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            if k == "wall_time":
                continue
            if k in INT_COLUMNS or k in TEXT_COLUMNS or k == "beta":
                assert ra[k] == rb[k], (k, ra, rb)
            else:
                np.testing.assert_allclose(float(ra[k]), float(rb[k]), rtol=1e-12, atol=1e-14,
                                           err_msg=k)
    ja, jb = (json.loads((p / "sweep.json").read_text()) for p in (out, ref))
    for key in ("config", "data", "theory", "members", "fingerprint"):
        assert ja[key] == jb[key], key
    ma, mb = (torch.load(p / "model.pt", weights_only=True) for p in (out, ref))
    assert ma["config"] == mb["config"]
    torch.testing.assert_close(ma["flat"], mb["flat"], rtol=0, atol=0)  # trained identically


@pytest.mark.slow
def test_thresholds_of_npy_with_workers_equal_in_process(tmp_path, capsys):
    x = _matrix(n=20000).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ref = _json_of(capsys, ["thresholds", str(tmp_path / "x.npy"), "--json"])
    got = _json_of(capsys, ["thresholds", str(tmp_path / "x.npy"), "--json", "--workers", "2"])
    _same_thresholds(got, ref)


@pytest.mark.slow
def test_parquet_and_npy_shards_on_a_scheduler_equal_in_process(tmp_path, capsys, cluster):
    addr = cluster[0].scheduler_address
    x = _matrix(n=6000)
    _write_parquet(tmp_path / "pq", x, files=3, row_group=700)
    (tmp_path / "shards").mkdir()
    for i, part in enumerate(np.array_split(x, 4)):
        np.save(tmp_path / "shards" / f"s{i}.npy", part)
    (tmp_path / "targets").mkdir()
    for i, part in enumerate(np.array_split(x[:, :2] - 7.0, 4)):
        np.save(tmp_path / "targets" / f"t{i}.npy", part)
    for data, extra in [(tmp_path / "pq", []), (tmp_path / "shards", []),
                        (tmp_path / "shards", ["--target", str(tmp_path / "targets")]),
                        (tmp_path / "pq", ["--columns", "c0,c1", "--target-columns", "c4"])]:
        ref = _json_of(capsys, ["thresholds", str(data), "--json", *extra])
        got = _json_of(capsys, ["thresholds", str(data), "--json", "--scheduler", addr, *extra])
        _same_thresholds(got, ref)
    ref = _json_of(capsys, ["optimum", "synthetic", "--latent-dim", "3", "--beta", "0.7", "--json"])
    got = _json_of(capsys, ["optimum", "synthetic", "--latent-dim", "3", "--beta", "0.7", "--json",
                            "--scheduler", addr])
    assert got["active"] == ref["active"]
    np.testing.assert_allclose(got["loss"], ref["loss"], rtol=RTOL)
    np.testing.assert_allclose(got["sigma2"], ref["sigma2"], rtol=1e-8)


@pytest.mark.slow
def test_distributed_sweep_equals_in_process(tmp_path, cluster, reference_sweep):
    out = tmp_path / "dist"
    assert main(["sweep", *SWEEP, "--out", str(out), "--scheduler",
                 cluster[0].scheduler_address]) == 0
    cells = sorted((out / "cells").glob("cell-*.json"))
    assert len(cells) == 8  # 4 betas x 2 seeds: one member per cell
    assert len(list((out / "cells").glob("cell-*.pt"))) == 8
    _assert_same_sweep(out, reference_sweep)


@pytest.mark.slow
def test_sweep_survives_a_killed_worker(tmp_path, cluster, reference_sweep):
    _, client = cluster
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # 1 beta per cell keeps each cell short; the kill lands while the other worker trains.
    proc = subprocess.Popen(
        [sys.executable, "-m", "postcollapse", "sweep", *SWEEP, "--out", str(out),
         "--scheduler", cluster[0].scheduler_address], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((out / "cells").glob("cell-*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = client.run(os.getpid)
    processing = client.processing()
    busy = [w for w, tasks in processing.items() if tasks] or list(pids)
    killed = pids[busy[0]]
    os.kill(killed, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    _assert_same_sweep(out, reference_sweep)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests
    assert killed not in client.run(os.getpid).values()


@pytest.mark.slow
def test_interrupted_distributed_sweep_resumes_without_recomputing(tmp_path, cluster,
                                                                   reference_sweep):
    from postcollapse.scale import distributed_sweep

    _, client = cluster
    out = tmp_path / "resumed"
    kw = dict(betas=[0.3, 1, 3, 8], seeds=range(2), latent_dim=3, steps=200, dtype="float64",
              tol=0, client=client, out=out)
    seen = []

    def stop_after_three(cell, result):
        seen.append(cell["index"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="3 of 8 cells saved"):
        distributed_sweep("synthetic", on_cell=stop_after_three, **kw)
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("cell-*.json")}
    assert len(kept) == 3 and not (out / "results.csv").exists()
    trained = []
    distributed_sweep("synthetic", resume=True, on_cell=lambda c, r: trained.append(c["index"]),
                      **kw)
    assert sorted(trained) == sorted(set(range(8)) - set(seen))  # only the missing cells
    for name, mtime in kept.items():
        assert (out / "cells" / name).stat().st_mtime_ns == mtime
    _assert_same_sweep(out, reference_sweep)
    # resuming a finished sweep trains nothing; other settings are refused
    again = []
    distributed_sweep("synthetic", resume=True, on_cell=lambda c, r: again.append(c), **kw)
    assert again == []
    with pytest.raises(ValueError, match="other settings"):
        distributed_sweep("synthetic", resume=True, **{**kw, "steps": 201})


@pytest.mark.gpu
@pytest.mark.slow
def test_distributed_sweep_on_gpu_workers_matches_in_process(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from distributed import Client, LocalCluster

    from postcollapse.scale import distributed_sweep
    from postcollapse.train import sweep

    kw = dict(betas=[0.3, 1, 3, 8], seeds=range(2), latent_dim=3, steps=200, dtype="float64",
              tol=0, device="cuda")
    ref = sweep("synthetic", **kw)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c, Client(c) as client:
        got = distributed_sweep("synthetic", client=client, out=tmp_path / "gpu", **kw)
    assert got.timing["device"].startswith("cuda")
    for ra, rb in zip(got.rows, ref.rows, strict=True):
        assert {k: ra[k] for k in INT_COLUMNS} == {k: rb[k] for k in INT_COLUMNS}
        np.testing.assert_allclose(ra["loss"], rb["loss"], rtol=1e-9)
    torch.testing.assert_close(got.model.flat, ref.model.flat, rtol=1e-9, atol=1e-12)
