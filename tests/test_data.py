"""postcollapse.data: synthetic spectra, embedded MNIST, target rules, streamed moments."""

from __future__ import annotations

import numpy as np
import pytest

from postcollapse.data import DEFAULT_ZETA2, Dataset, load, mnist, mnist_labels, synthetic
from postcollapse.theory import Moments, spectrum

# ---------------------------------------------------------------------------- synthetic


def test_synthetic_default_shapes_and_seed():
    x, y = synthetic()
    assert x.shape == (2000, 5) and y.shape == (2000, 5)
    x2, y2 = synthetic()
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = synthetic(seed=1)
    assert not np.allclose(x, x3)
    # y = M x exactly (no noise): least squares recovers y with zero residual.
    m, res, *_ = np.linalg.lstsq(x, y, rcond=None)
    np.testing.assert_allclose(x @ m, y, atol=1e-10)


@pytest.mark.parametrize(
    "d0,d2,zeta",
    [(5, 5, np.sqrt(DEFAULT_ZETA2)), (4, 7, [3.0, 0.5]), (8, 3, [2.0, 2.0, 0.1])],
)
def test_synthetic_prescribed_sample_spectrum_is_exact(d0, d2, zeta):
    x, y = synthetic(n_samples=500, d0=d0, d2=d2, zeta=zeta, seed=3)
    # Direct computation of the sample Z = C A^{-1/2} with 1/N central moments.
    xc, yc = x - x.mean(0), y - y.mean(0)
    a, c = xc.T @ xc / len(x), yc.T @ xc / len(x)
    w, v = np.linalg.eigh(a)
    z = c @ (v / np.sqrt(w)) @ v.T
    sv = np.linalg.svd(z, compute_uv=False)
    expect = np.zeros(min(d0, d2))
    expect[: len(zeta)] = np.sort(zeta)[::-1]
    np.testing.assert_allclose(sv, expect, rtol=1e-10, atol=1e-10)
    # And through the library's streamed moments and spectrum.
    s = spectrum(Moments.from_arrays(x, y))
    np.testing.assert_allclose(s.zeta_padded(len(expect)), expect, rtol=1e-10, atol=1e-10)
    assert s.residual < 1e-9


def test_synthetic_noise_gives_residual_and_keeps_zeta():
    x, y = synthetic(n_samples=3000, zeta=[2.0, 1.0], noise=0.5, seed=4)
    s = spectrum(Moments.from_arrays(x, y))
    np.testing.assert_allclose(s.zeta[:2], [2.0, 1.0], rtol=1e-10)
    # Residual = total noise variance over the 5 targets, about 5 * 0.25.
    assert s.residual == pytest.approx(5 * 0.25, rel=0.1)
    # Without a prescribed spectrum the noise is plain additive noise.
    x, y = synthetic(n_samples=3000, noise=0.5, seed=4)
    assert spectrum(Moments.from_arrays(x, y)).residual == pytest.approx(1.25, rel=0.1)


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match="zeta must have between 1 and min"):
        synthetic(zeta=[1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="must exceed d0"):
        synthetic(n_samples=4, zeta=[1.0])
    with pytest.raises(ValueError, match="noise must be"):
        synthetic(noise=-1)
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        synthetic(n_samples=1)


def test_synthetic_name_has_the_paper_spectrum():
    ds = load("synthetic")
    assert (ds.n_samples, ds.d0, ds.d2, ds.plain) == (2000, 5, 5, False)
    s = spectrum(ds.moments())
    np.testing.assert_allclose(s.zeta**2, DEFAULT_ZETA2, rtol=1e-10)
    assert s.zeta[0] ** 2 == pytest.approx(14.0)  # complete collapse at beta = 14


# ---------------------------------------------------------------------------- mnist


def test_mnist_embedded_subset():
    x = mnist()
    assert x.shape == (5000, 784) and x.dtype == np.float64
    assert x.min() == 0.0 and x.max() == 1.0
    labels = mnist_labels()
    assert labels.shape == (5000,) and set(np.unique(labels)) == set(range(10))
    small = mnist(n_samples=100)
    np.testing.assert_array_equal(small, x[:100])
    small[0, 0] = 5.0  # a copy: the cache is untouched
    assert mnist()[0, 0] == x[0, 0] != 5.0
    with pytest.raises(ValueError, match="between 2 and 5000"):
        mnist(n_samples=6000)


def test_mnist_spectrum_matches_direct_eigenvalues():
    ds = load("mnist")
    assert ds.plain and ds.n_samples == 5000
    s = spectrum(ds.moments())
    x = mnist()
    ev = np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True))[::-1]
    np.testing.assert_allclose(s.zeta[:20] ** 2, ev[:20], rtol=1e-9)
    # The paper's Section 5 quotes ~5.12, 3.74, ... for MNIST; this subset: ~5.19, 3.82.
    assert 4.5 < s.zeta[0] ** 2 < 6.0
    assert s.rank < 784  # border pixels are constant zero


# ---------------------------------------------------------------------------- targets


def test_target_rules(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    np.savez(tmp_path / "x.npz", x=x)
    np.save(tmp_path / "t.npy", y)

    ds = load(tmp_path / "xy.npz")  # has y: y is the target
    assert not ds.plain and ds.d2 == 2
    np.testing.assert_array_equal(ds.y, y)
    assert load(tmp_path / "xy.npz", target="same").plain  # forced plain VAE
    ds = load(tmp_path / "x.npz")  # no y: plain VAE
    assert ds.plain and ds.d2 == 3 and ds.y is None
    ds = load(str(tmp_path / "x.npz"), target=str(tmp_path / "t.npy"))  # another file
    assert not ds.plain and ds.d2 == 2
    np.testing.assert_array_equal(ds.y, y)
    assert load("synthetic", target="same").plain
    assert not load("synthetic").plain


def test_dataset_validates_rows():
    with pytest.raises(ValueError, match="same number of rows"):
        Dataset("d", np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 are needed"):
        Dataset("d", np.zeros((1, 2)))


# ---------------------------------------------------------------------------- streaming


def test_memmap_streaming_equals_in_memory_moments(tmp_path):
    rng = np.random.default_rng(1)
    # Far from zero: streaming must stay accurate (shifted, centred chunks).
    x = 1e4 + rng.normal(size=(3001, 7)) @ rng.normal(size=(7, 7))
    path = tmp_path / "big.npy"
    np.save(path, x)
    ds = load(path)
    assert ds.memory_mapped
    streamed = ds.moments(chunk_size=256)
    in_memory = Moments.from_arrays(np.load(path), chunk_size=10**6)
    assert streamed.n_samples == in_memory.n_samples == 3001
    np.testing.assert_allclose(streamed.mean_x, in_memory.mean_x, rtol=1e-14)
    np.testing.assert_allclose(streamed.cov_x, in_memory.cov_x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(streamed.cov_x, np.cov(x, rowvar=False, bias=True),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(spectrum(streamed).zeta, spectrum(in_memory).zeta, rtol=1e-10)


def test_memmap_nan_is_found_while_streaming(tmp_path):
    x = np.ones((1000, 3))
    x[:, 1] = np.arange(1000)
    x[700, 2] = np.nan
    x[900, 0] = np.inf
    x[950, 1] = np.nan
    np.save(tmp_path / "bad.npy", x)
    ds = load(tmp_path / "bad.npy")  # memory-mapped: checked while streamed
    with pytest.raises(ValueError, match=r"2 NaN and 1 inf value\(s\); the first is at row 700, "
                                         r"column 2"):
        ds.moments(chunk_size=128)
    with pytest.raises(ValueError, match="2 NaN and 1 inf"):
        ds.check_finite()


def test_rank_deficient_data_is_handled(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4))
    x = np.column_stack([x, np.full(200, 3.0), x[:, 0]])  # constant + duplicated column
    np.save(tmp_path / "rd.npy", x)
    s = spectrum(load(tmp_path / "rd.npy").moments())
    assert s.rank == 4 and s.d0 == 6
    assert np.all(np.isfinite(s.zeta))


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def test_streaming_memmap_does_not_keep_the_file_resident(tmp_path):
    try:
        with open("/proc/self/clear_refs", "w") as fh:  # reset peak RSS (VmHWM), Linux
            fh.write("5")
        _status_mib("VmHWM")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs")
    path = tmp_path / "big.npy"
    np.save(path, np.random.default_rng(0).random((80_000, 64)))  # 39 MiB
    ds = load(path)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _status_mib("VmRSS")
    m = ds.moments(chunk_size=2048)  # 1 MiB chunks
    growth = _status_mib("VmHWM") - base
    assert m.n_samples == 80_000
    # Without releasing streamed pages the mapped file would add ~39 MiB.
    assert growth < 15, f"peak RSS grew by {growth:.1f} MiB while streaming a 39 MiB file"


def test_page_releaser_positions_memmap_slices_within_the_mapping(tmp_path):
    """A memmap slice inherits its parent's offset; the releaser must still locate the
    slice's own rows in the mapping (else it drops pages it never read)."""
    from postcollapse.data.dataset import _PageReleaser

    path = tmp_path / "a.npy"
    np.save(path, np.arange(20000 * 8, dtype=np.float64).reshape(20000, 8))
    mm = np.load(path, mmap_mode="r")
    row = mm.strides[0]
    for start in (0, 1000, 5000):
        r = _PageReleaser(mm[start:])
        assert r.mm is not None
        assert r.pos == mm.offset + start * row
