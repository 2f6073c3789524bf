"""postcollapse.scale: blocked / distributed moments equal one-shot moments; map_betas."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream

from postcollapse import scale
from postcollapse.theory import Moments, min_loss, spectrum

RTOL = 1e-12


def _data(dtype=np.float64, n=1000, d0=6, d2=3, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d0)) * np.linspace(0.5, 3, d0) + 1e4).astype(dtype)
    y = (x[:, :d2].astype(np.float64) @ rng.standard_normal((d2, d2))
         + rng.standard_normal((n, d2)) - 3e3).astype(dtype)
    return x, y


def _assert_same(m: Moments, ref: Moments, rtol: float = RTOL):
    """All fields within rtol of their natural scale (cross terms: Cauchy-Schwarz bound)."""
    assert m.n_samples == ref.n_samples
    assert m.plain == ref.plain and m.d0 == ref.d0 and m.d2 == ref.d2
    np.testing.assert_allclose(m.mean_x, ref.mean_x, rtol=rtol)
    sx = np.abs(np.diag(ref.m_xx)).max()
    np.testing.assert_allclose(m.m_xx, ref.m_xx, rtol=rtol, atol=rtol * sx)
    if not ref.plain:
        np.testing.assert_allclose(m.y_mean, ref.y_mean, rtol=rtol)
        np.testing.assert_allclose(m.m_yx, ref.m_yx, rtol=rtol, atol=rtol * np.sqrt(sx * ref.m_yy))
        assert m.m_yy == pytest.approx(ref.m_yy, rel=rtol)


# ------------------------------------------------------------------ moments = one-shot
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("conditional", [False, True])
def test_moments_equal_one_shot_far_from_zero(dtype, conditional):
    x, y = _data(dtype)
    y = y if conditional else None
    ref = Moments.from_arrays(x, y)
    # 97 rows per block: 11 blocks, the last one short; two levels of the merge tree.
    _assert_same(scale.moments(x, y, chunk_rows=97), ref)
    # A dask array as input; deep binary tree.
    xd = da.from_array(x, chunks=(128, -1))
    yd = None if y is None else da.from_array(y, chunks=(128, -1))
    _assert_same(scale.moments(xd, yd, split_every=2), ref)


def test_uneven_row_chunks_and_column_chunks_are_rechunked():
    x, y = _data()
    ref = Moments.from_arrays(x, y)
    rows = (100, 250, 3, 1, 646)
    xd = da.from_array(x, chunks=(rows, (2, 4)))  # split columns: rechunked automatically
    yd = da.from_array(y, chunks=(rows, (1, 1, 1)))
    _assert_same(scale.moments(xd, yd), ref)
    _assert_same(scale.moments(xd, y), ref)  # a numpy y follows x's row blocks
    _assert_same(scale.moments(x, yd), ref)  # and a numpy x follows y's
    _assert_same(scale.moments(xd, da.from_array(y, chunks=(300, -1)), chunk_rows=333), ref)


def test_memmap_default_chunks_and_one_column(tmp_path):
    x, _ = _data()
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    _assert_same(scale.moments(mm), Moments.from_arrays(x))
    _assert_same(scale.moments(x[:, 0], chunk_rows=64), Moments.from_arrays(x[:, :1]))
    x[901, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    with pytest.raises(ValueError, match=r"rows 900\.\.999; the first is at row 901, column 3"):
        scale.moments(mm, chunk_rows=100)


def test_merge_tree_is_scheduler_independent_and_spectrum_matches():
    x, y = _data()
    a = scale.moments(x, y, chunk_rows=50, scheduler="sync")
    b = scale.moments(x, y, chunk_rows=50, scheduler="threads")
    # Same blocks, same tree: bit-identical whatever runs it.
    assert np.array_equal(a.m_xx, b.m_xx) and np.array_equal(a.m_yx, b.m_yx)
    assert a.m_yy == b.m_yy
    s = scale.spectrum(x, y, chunk_rows=50)
    s_ref = spectrum(Moments.from_arrays(x, y))
    np.testing.assert_allclose(s.zeta, s_ref.zeta, rtol=1e-10)
    assert s.residual == pytest.approx(s_ref.residual, rel=1e-10)


def test_empty_rows_give_empty_moments():
    m = scale.moments(np.zeros((0, 4)), np.zeros((0, 2)))
    assert m.n_samples == 0 and m.d0 == 4 and m.d2 == 2


# ------------------------------------------------------------------ files
def _shards(tmp_path, x, y, sizes):
    paths, targets, start = [], [], 0
    for i, k in enumerate(sizes):
        np.save(tmp_path / f"x{i}.npy", x[start : start + k])
        np.save(tmp_path / f"y{i}.npy", y[start : start + k])
        paths.append(tmp_path / f"x{i}.npy")
        targets.append(str(tmp_path / f"y{i}.npy"))
        start += k
    return paths, targets


def test_files_sharded_equal_concatenation(tmp_path):
    x, y = _data(np.float32)
    paths, targets = _shards(tmp_path, x, y, (400, 1, 599))  # a one-row shard too
    ref = Moments.from_arrays(x, y)
    _assert_same(scale.moments_from_files(paths, target_paths=targets), ref)
    _assert_same(scale.moments_from_files(paths, target_paths=targets, chunk_rows=150), ref)
    _assert_same(scale.moments_from_files(paths), Moments.from_arrays(x))


def test_files_nan_names_file_and_global_row(tmp_path):
    x, y = _data()
    x[650, 4] = np.inf
    paths, _ = _shards(tmp_path, x, y, (400, 600))
    msg = r"x1\.npy holds 0 NaN and 1 inf.*row 650 \(row 250 of .*x1\.npy\), column 4"
    with pytest.raises(ValueError, match=msg):
        scale.moments_from_files(paths)
    with pytest.raises(ValueError, match=msg):
        scale.moments_from_files(paths, chunk_rows=150)


def test_files_errors(tmp_path):
    x, y = _data()
    paths, targets = _shards(tmp_path, x, y, (500, 500))
    np.save(tmp_path / "narrow.npy", x[:10, :5])
    with pytest.raises(ValueError, match=r"narrow\.npy has 5 columns but .*x0\.npy has 6"):
        scale.moments_from_files([paths[0], tmp_path / "narrow.npy"])
    with pytest.raises(ValueError, match=r"2 input shard\(s\) but 1 target"):
        scale.moments_from_files(paths, target_paths=targets[:1])
    with pytest.raises(ValueError, match=r"x0\.npy has 500 rows but its target .*narrow\.npy"):
        scale.moments_from_files(paths[:1], target_paths=[tmp_path / "narrow.npy"])
    with pytest.raises(ValueError, match="paths is empty"):
        scale.moments_from_files([])
    (tmp_path / "bad.npy").write_bytes(b"not an npy file")
    with pytest.raises(ValueError, match=r"cannot read .*bad\.npy as \.npy"):
        scale.moments_from_files([tmp_path / "bad.npy"])


# ------------------------------------------------------------------ errors
def test_mismatched_rows_and_chunks():
    x, y = _data()
    with pytest.raises(ValueError, match="x has 1000 rows but the target y has 999"):
        scale.moments(x, y[:999])
    xd = da.from_array(x, chunks=(100, -1))
    yd = da.from_array(y, chunks=(250, -1))
    with pytest.raises(ValueError, match=r"x has row chunks \(100, 100, 100, \.\.\., 100; 10 "
                       r"blocks\) but the target y has \(250, 250, 250, 250\).*chunk_rows="):
        scale.moments(xd, yd)
    _assert_same(scale.moments(xd, yd, chunk_rows=200), Moments.from_arrays(x, y))


def test_nan_reports_global_row():
    x, y = _data()
    x[777, 2] = np.nan
    with pytest.raises(ValueError, match=r"x holds 1 NaN and 0 inf value\(s\) in rows 700\.\.799; "
                       r"the first is at row 777, column 2"):
        scale.moments(x, chunk_rows=100)
    x[777, 2] = 0.0
    y[555, 1] = -np.inf
    rows = (500, 100, 400)
    with pytest.raises(ValueError,
                       match=r"y \(target\) holds 0 NaN and 1 inf.*at row 555, column 1"):
        scale.moments(da.from_array(x, chunks=(rows, -1)), da.from_array(y, chunks=(rows, -1)))


def test_bad_inputs():
    x, _ = _data()
    with pytest.raises(ValueError, match=r"x must be a 2-D array .* got shape \(2, 3, 4\)"):
        scale.moments(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="x must hold real numbers, got dtype <U1"):
        scale.moments(np.array([["a"], ["b"]]))
    with pytest.raises(ValueError, match="chunk_rows must be >= 1, got 0"):
        scale.moments(x, chunk_rows=0)
    with pytest.raises(ValueError, match="split_every must be >= 2"):
        scale.moments(x, split_every=1)
    xd = da.from_array(x, chunks=(100, -1))
    with pytest.raises(ValueError, match=r"unknown row chunk sizes.*compute_chunk_sizes"):
        scale.moments(xd[xd[:, 0] > 1e4])


# ------------------------------------------------------------------ map_betas
def _loss_rows(spec, seeds=(0,)):
    def fn(bs):
        loss = min_loss(spec, bs, latent_dim=3)
        return [{"beta": float(b), "seed": s, "loss": float(v)}
                for b, v in zip(bs, loss, strict=True) for s in seeds]
    return fn


def test_map_betas_order_and_equality():
    x, y = _data()
    spec = spectrum(Moments.from_arrays(x, y))
    rng = np.random.default_rng(1)
    betas = rng.permutation(np.geomspace(1e-2, 1e2, 23))  # not sorted: input order is kept
    direct = min_loss(spec, betas, latent_dim=3)
    for chunks in (None, 1, 5, 23, (3, 10, 10)):
        rows = scale.map_betas(_loss_rows(spec), betas, chunks=chunks)
        assert [r["beta"] for r in rows] == betas.tolist()
        np.testing.assert_allclose([r["loss"] for r in rows], direct, rtol=1e-14)
    rows = scale.map_betas(_loss_rows(spec, seeds=(0, 1)), betas, chunks=4)
    assert [(r["beta"], r["seed"]) for r in rows] == [(b, s) for b in betas for s in (0, 1)]


def test_map_betas_errors():
    fn = lambda bs: [{"beta": b} for b in bs]  # noqa: E731
    with pytest.raises(ValueError, match=r"betas\[1\] is -1"):
        scale.map_betas(fn, [1.0, -1.0])
    with pytest.raises(ValueError, match="betas is empty"):
        scale.map_betas(fn, [])
    with pytest.raises(ValueError, match=r"chunks \(1, 1\) must be positive integers summing to "
                       "the 3 betas"):
        scale.map_betas(fn, [1.0, 2.0, 3.0], chunks=(1, 1))
    with pytest.raises(ValueError, match="chunks must be >= 1"):
        scale.map_betas(fn, [1.0], chunks=0)
    with pytest.raises(TypeError, match="fn must be callable"):
        scale.map_betas(3, [1.0])
    with pytest.raises(TypeError, match=r"fn returned dict for beta chunk 0 \(1\.\.2\); it must"):
        scale.map_betas(lambda bs: {"beta": bs}, [1.0, 2.0], chunks=2)
    with pytest.raises(TypeError, match="each row must be a dict"):
        scale.map_betas(lambda bs: list(bs), [1.0, 2.0])


# ------------------------------------------------------------------ distributed
def test_local_cluster_moments_files_and_map_betas(tmp_path):
    x, y = _data()
    ref = Moments.from_arrays(x, y)
    paths, targets = _shards(tmp_path, x, y, (300, 300, 400))
    spec = spectrum(ref)
    betas = np.geomspace(1e-2, 1e2, 9)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                     dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        with get_task_stream(client) as ts:  # the active client runs it, unasked
            m = scale.moments(x, y, chunk_rows=100)
        assert len(ts.data) >= 10
        _assert_same(m, ref)
        # Bit-identical to the local threaded run: the merge tree does not depend on where.
        local = scale.moments(x, y, chunk_rows=100, scheduler="sync")
        assert np.array_equal(m.m_xx, local.m_xx) and m.m_yy == local.m_yy
        _assert_same(scale.moments_from_files(paths, target_paths=targets), ref)
        rows = scale.map_betas(_loss_rows(spec), betas, client=client, chunks=2)
        np.testing.assert_allclose([r["loss"] for r in rows],
                                   min_loss(spec, betas, latent_dim=3), rtol=1e-14)
        assert [r["beta"] for r in rows] == betas.tolist()
        x[5, 0] = np.nan
        with pytest.raises(ValueError, match="at row 5, column 0"):
            scale.moments(x, chunk_rows=100)


@pytest.mark.slow
def test_local_cluster_of_processes(tmp_path):
    """Separate worker processes: closures and file paths travel, results are equal."""
    x, y = _data()
    ref = Moments.from_arrays(x, y)
    paths, targets = _shards(tmp_path, x, y, (300, 700))
    spec = spectrum(ref)
    betas = np.geomspace(1e-2, 1e2, 6)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        _assert_same(scale.moments_from_files(paths, target_paths=targets), ref)
        _assert_same(scale.moments(da.from_array(x, chunks=(250, -1)), y), ref)
        rows = scale.map_betas(_loss_rows(spec), betas, client=client)
        np.testing.assert_allclose([r["loss"] for r in rows],
                                   min_loss(spec, betas, latent_dim=3), rtol=1e-14)
        x[600, 1] = np.nan
        np.save(paths[1], x[300:])
        msg = r"x1\.npy holds 1 NaN.*at row 600 \(row 300 of .*x1\.npy\)"
        with pytest.raises(ValueError, match=msg):
            scale.moments_from_files(paths)
