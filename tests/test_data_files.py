"""postcollapse.data.files: .npy / .npz / .csv / IDX readers on files written here."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from postcollapse.data import load, load_idx, read_array, read_csv, read_npy, read_npz, read_xy

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path, a: np.ndarray, *, gz: bool = False, truncate: int = 0) -> Path:
    """Write ``a`` in the real IDX format (MNIST): 0, 0, type, ndim, dims (>u4), data (BE)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}
    code = codes[a.dtype]
    head = struct.pack(">BBBB", 0, 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    raw = head + a.astype(a.dtype.newbyteorder(">")).tobytes()
    if truncate:
        raw = raw[:-truncate]
    path = Path(path)
    if gz:
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 4, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_flattened_and_scaled(tmp_path, images, gz):
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    p = write_idx(tmp_path / name, images, gz=gz)
    a = load_idx(p)
    assert a.shape == (12, 12) and a.dtype == np.float64
    np.testing.assert_array_equal(a, images.reshape(12, -1) / 255.0)
    raw = load_idx(p, scale=False, flatten=False)
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, images)
    # load() by path, and by the folder that holds it.
    np.testing.assert_array_equal(load(p).x, a)
    ds = load(tmp_path)
    assert ds.plain and ds.x.shape == (12, 12)
    np.testing.assert_array_equal(ds.x, a)


def test_idx_labels_and_other_types(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    a = load_idx(write_idx(tmp_path / "train-labels-idx1-ubyte", labels), scale=False)
    np.testing.assert_array_equal(a, labels)
    f = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_allclose(load_idx(write_idx(tmp_path / "f.idx", f)), f)  # not scaled
    s = np.array([[-300, 5], [7, 1000]], dtype=np.int16)
    np.testing.assert_array_equal(load_idx(write_idx(tmp_path / "s-idx2", s)), s)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, images, gz):
    p = write_idx(tmp_path / "t-idx3-ubyte", images, gz=gz, truncate=7)
    with pytest.raises(ValueError, match=r"truncated: header \(12, 4, 3\) needs 144 data bytes, "
                                         r"found 137"):
        load_idx(p)


def test_idx_gzip_stream_cut_short(tmp_path, images):
    p = write_idx(tmp_path / "x-idx3-ubyte.gz", images, gz=True)
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated or a corrupt gzip file"):
        load_idx(p)


def test_idx_bad_header(tmp_path):
    p = tmp_path / "junk-idx3-ubyte"
    p.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="is not an IDX file"):
        load_idx(p)
    p.write_bytes(struct.pack(">BBBB", 0, 0, 8, 3) + b"\x00\x00")
    with pytest.raises(ValueError, match="IDX header is incomplete"):
        load_idx(p)


def test_idx_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no train-images-idx3-ubyte"):
        load(tmp_path / "empty")


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="Fashion-MNIST IDX files not installed")
def test_fashion_mnist_folder():
    ds = load(FASHION)
    assert ds.x.shape == (60000, 784) and ds.plain
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    t = load_idx(FASHION / "t10k-images-idx3-ubyte.gz")
    assert t.shape == (10000, 784)


# ---------------------------------------------------------------------------- npy / npz


def test_npy_memmapped_2d_and_1d(tmp_path):
    a = np.arange(12.0).reshape(6, 2)
    np.save(tmp_path / "a.npy", a)
    x = read_npy(tmp_path / "a.npy")
    assert isinstance(x, np.memmap) or isinstance(x.base, np.memmap)
    np.testing.assert_array_equal(x, a)
    np.save(tmp_path / "v.npy", np.arange(5))
    assert read_array(tmp_path / "v.npy").shape == (5, 1)  # 1-D -> one column
    np.save(tmp_path / "i.npy", np.arange(12, dtype=np.int32).reshape(4, 3))
    m = load(tmp_path / "i.npy").moments()
    np.testing.assert_allclose(m.mean_x, [4.5, 5.5, 6.5])


def test_npy_3d_and_object_rejected(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"must be a 2-D array .* got shape \(2, 2, 2\)"):
        read_npy(tmp_path / "c.npy")
    np.save(tmp_path / "o.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read .* as .npy"):
        read_npy(tmp_path / "o.npy")


def test_npy_corrupt(tmp_path):
    p = tmp_path / "bad.npy"
    p.write_bytes(b"not really numpy")
    with pytest.raises(ValueError, match="cannot read .*bad.npy as .npy"):
        read_npy(p)
    np.save(p, np.zeros((100, 3)))
    p.write_bytes(p.read_bytes()[:500])  # truncated data
    with pytest.raises(ValueError, match="cannot read .*bad.npy as .npy"):
        read_npy(p)


def test_npz_x_and_y(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    rx, ry = read_npz(tmp_path / "d.npz")
    np.testing.assert_array_equal(rx, x)
    assert ry.shape == (8, 1)  # 1-D y -> one column
    np.savez(tmp_path / "n.npz", x=x)
    assert read_npz(tmp_path / "n.npz")[1] is None
    np.savez(tmp_path / "w.npz", a=x)
    with pytest.raises(ValueError, match=r"holds no array 'x' \(found: a\)"):
        read_npz(tmp_path / "w.npz")


def test_npz_corrupt(tmp_path):
    p = tmp_path / "z.npz"
    p.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="cannot read .*z.npz as .npz"):
        read_npz(p)


# ---------------------------------------------------------------------------- csv


def test_csv_with_and_without_header(tmp_path):
    (tmp_path / "h.csv").write_text("a,b,c\n1,2,3\n4,5,6.5\n")
    (tmp_path / "n.csv").write_text("1,2,3\n4, 5 ,6.5\n\n")
    expect = np.array([[1, 2, 3], [4, 5, 6.5]])
    np.testing.assert_array_equal(read_csv(tmp_path / "h.csv"), expect)
    np.testing.assert_array_equal(read_csv(tmp_path / "n.csv"), expect)
    (tmp_path / "one.csv").write_text("x\n1\n2\n3\n")
    assert read_xy(tmp_path / "one.csv")[0].shape == (3, 1)


def test_csv_non_numeric_cell(tmp_path):
    (tmp_path / "b.csv").write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(ValueError, match=r"non-numeric value 'oops' at line 3, column 2"):
        read_csv(tmp_path / "b.csv")
    (tmp_path / "e.csv").write_text("1,2\n3,\n")
    with pytest.raises(ValueError, match=r"non-numeric value '\(empty\)' at line 2, column 2"):
        read_csv(tmp_path / "e.csv")
    (tmp_path / "r.csv").write_text("1,2\n3,4,5\n")
    with pytest.raises(ValueError, match="line 2 has 3 column"):
        read_csv(tmp_path / "r.csv")
    (tmp_path / "h.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="header but no data rows"):
        read_csv(tmp_path / "h.csv")


def test_csv_nan_reported(tmp_path):
    (tmp_path / "n.csv").write_text("a,b\n1,2\n3,nan\ninf,nan\n")
    with pytest.raises(ValueError, match=r"2 NaN and 1 inf value\(s\); the first is at row 1, "
                                         r"column 1"):
        load(tmp_path / "n.csv")


def test_unknown_suffix_and_missing(tmp_path):
    (tmp_path / "d.parquet2").write_text("x")
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_xy(tmp_path / "d.parquet2")
    with pytest.raises(FileNotFoundError):
        read_xy(tmp_path / "missing.npy")
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        load("cifar")
