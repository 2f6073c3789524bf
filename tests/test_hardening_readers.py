"""Fuzzing every file reader: each input gives a finite 2-D array or a one-line error.

Inputs are drawn from valid files that are then truncated, corrupted, given a wrong magic,
a wrong dtype, a header declaring a huge shape, ragged or non-numeric cells, a BOM or odd
line endings. Never a traceback from another exception type, a hang, or a large
allocation (tracemalloc checks the peak while reading a tiny file).
"""

from __future__ import annotations

import gzip
import io
import os
import resource
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from fuzzing import fast_and_slow, time_limit
from postcollapse.data import load, read_csv, read_xy

# A tiny file must never make the reader allocate more than this.
_PEAK_BYTES = 64 << 20
_SECONDS = 10




def _outcome(path):
    """("ok", x, y) or ("error", message); anything else fails the test."""
    tracemalloc.start()
    try:
        with time_limit(_SECONDS, "reader"):
            x, y = read_xy(path)
            x = np.asarray(x)
            y = None if y is None else np.asarray(y)
    except (ValueError, TypeError, OSError) as exc:
        msg = str(exc)
        assert msg and "\n" not in msg.strip(), f"not a one-line error: {msg!r}"
        return ("error", msg)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < _PEAK_BYTES, f"reading a tiny file peaked at {peak} bytes"
    for a in (x, y):
        if a is not None:
            assert a.ndim == 2 and a.shape[0] >= 2
            assert np.issubdtype(a.dtype, np.number) or a.dtype == bool
            assert np.all(np.isfinite(a))
    return ("ok", x, y)


def _in_tmp(name: str, data: bytes):
    d = tempfile.mkdtemp(prefix="pc-fuzz-")
    p = Path(d) / name
    p.write_bytes(data)
    return p


def _mutate(data: bytes, how: str, at: int, byte: int) -> bytes:
    if not data:
        return data
    at %= len(data)
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([byte]) + data[at + 1:]
    if how == "insert":
        return data[:at] + bytes([byte]) + data[at:]
    if how == "garbage-head":
        return bytes([byte]) * 8 + data[8:]
    return data


# Half the cases keep the file intact (so valid files are read, and read right).
MUTATIONS = st.one_of(
    st.just(("none", 0, 0)),
    st.tuples(st.sampled_from(["truncate", "flip", "insert", "garbage-head"]),
              st.integers(0, 1 << 20), st.integers(0, 255)),
)

DTYPES = ["<f8", ">f8", "<f4", ">f4", "<f2", "<i4", ">i4", "<i8", "u1", "?", "<c16", "O",
          "<U3", "S2", "M8[s]", "<f8,<i4"]
SHAPES = st.one_of(st.just(()), st.tuples(st.integers(0, 6)),
                   st.tuples(st.integers(2, 6), st.integers(1, 4)),
                   st.tuples(st.integers(0, 6), st.integers(0, 4)),
                   st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2)))


def _npy_bytes(dtype: str, shape, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape)) if shape else 1
    vals = rng.normal(size=size) * 10
    if dtype == "O":
        a = np.array(list(vals) + ["s"], dtype=object)[:size].reshape(shape)
    elif dtype == "<f8,<i4":
        a = np.zeros(shape, dtype=dtype)
    else:
        a = vals.astype(np.dtype(dtype).type if dtype not in ("<U3", "S2") else dtype)
        a = a.astype(dtype).reshape(shape)
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def _npy_with_shape(shape_text: str, payload: int = 64) -> bytes:
    hdr = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape_text}, }}"
    hdr += " " * (118 - len(hdr) % 128 if len(hdr) < 118 else 0) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + b"\0" * payload


# ---------------------------------------------------------------- .npy


def _fuzz_npy(dtype, shape, seed, mutation):
    data = _mutate(_npy_bytes(dtype, shape, seed), *mutation)
    _outcome(_in_tmp("f.npy", data))


test_fuzz_npy, test_fuzz_npy_slow = fast_and_slow(
    fast=30, slow=400, dtype=st.sampled_from(DTYPES), shape=SHAPES,
    seed=st.integers(0, 99), mutation=MUTATIONS)(_fuzz_npy)


@pytest.mark.parametrize("shape", ["(1000000000000, 5)", "(5, 1000000000000)",
                                   "(4294967296, 4294967296)", "(10**30,)", "(-1, 3)",
                                   "(2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2)"])
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_npy_huge_declared_shape_refused(shape, suffix):
    data = _npy_with_shape(shape)
    if suffix == ".npz":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("x.npy", data)
        data = buf.getvalue()
    out = _outcome(_in_tmp("h" + suffix, data))
    assert out[0] == "error"


def test_object_npy_never_unpickled():
    """An object array holding a pickle that would run code is refused unread."""
    marker = Path(tempfile.mkdtemp()) / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    buf = io.BytesIO()
    np.save(buf, np.array([Evil(), Evil()], dtype=object), allow_pickle=True)
    for suffix in (".npy", ".npz"):
        data = buf.getvalue()
        if suffix == ".npz":
            zb = io.BytesIO()
            with zipfile.ZipFile(zb, "w") as z:
                z.writestr("x.npy", data)
            data = zb.getvalue()
        out = _outcome(_in_tmp("evil" + suffix, data))
        assert out[0] == "error" and "Python objects" in out[1]
    assert not marker.exists()


def test_npz_unsupported_zip_version_one_line(tmp_path):
    """A corrupt central directory can make zipfile raise NotImplementedError."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", _npy_bytes("<f8", (3, 2), 0))
    data = bytearray(buf.getvalue())
    cd = data.rfind(b"PK\x01\x02")  # central directory entry: "version needed" at +6
    data[cd + 6] = 64
    p = tmp_path / "v.npz"
    p.write_bytes(bytes(data))
    out = _outcome(p)
    assert out[0] == "error" and "cannot read" in out[1]


# ---------------------------------------------------------------- .npz


def _fuzz_npz(x_spec, y_spec, extra, mutation):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for key, spec in (("x", x_spec), ("y", y_spec)):
            if spec is not None:
                z.writestr(key + ".npy", _npy_bytes(*spec))
        if extra:
            z.writestr("notes.txt", b"hello")
    out = _outcome(_in_tmp("f.npz", _mutate(buf.getvalue(), *mutation)))
    if out[0] == "ok" and out[2] is not None:
        assert out[1].shape[0] == out[2].shape[0]


_ARRAY_SPEC = st.tuples(st.sampled_from(DTYPES), SHAPES, st.integers(0, 99))
test_fuzz_npz, test_fuzz_npz_slow = fast_and_slow(
    fast=30, slow=300, x_spec=st.one_of(st.none(), _ARRAY_SPEC),
    y_spec=st.one_of(st.none(), _ARRAY_SPEC), extra=st.booleans(),
    mutation=MUTATIONS)(_fuzz_npz)


# ---------------------------------------------------------------- .csv

_NUMBER_CELLS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from([" 2.5 ", "1e-3", "-0", "+4", '"7"']),
)
_BAD_CELLS = st.sampled_from(["", "abc", "nan", "inf", "-inf", "1e999", "1,5", "--1", "0x10",
                              "１", "1 2", "\t", "é", "NULL"])


def _fuzz_csv(rows, bad, header, bom, ending, trailing):
    rows = [list(r) for r in rows]
    for i, j, cell in bad:
        if rows and rows[i % len(rows)]:
            r = rows[i % len(rows)]
            r[j % len(r)] = cell
    lines = ([",".join(header)] if header else []) + [",".join(r) for r in rows]
    text = ending.join(lines) + (ending if trailing else "")
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    out = _outcome(_in_tmp("f.csv", data))
    clean = bool(rows) and not bad and len({len(r) for r in rows}) == 1 and len(rows) >= 2
    if clean:  # a rectangular numeric table must be read, and read exactly
        assert out[0] == "ok", out
        want = np.array([[float(c.strip().strip('"')) for c in r] for r in rows])
        np.testing.assert_array_equal(out[1], want)


test_fuzz_csv, test_fuzz_csv_slow = fast_and_slow(
    fast=40, slow=500,
    rows=st.integers(1, 4).flatmap(
        lambda k: st.lists(st.lists(_NUMBER_CELLS, min_size=k, max_size=k), max_size=6)),
    bad=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), _BAD_CELLS), max_size=2),
    header=st.one_of(st.none(), st.lists(st.sampled_from(["a", "b", "x 1", "é"]), min_size=1,
                                         max_size=4)),
    bom=st.booleans(), ending=st.sampled_from(["\n", "\r\n", "\r"]), trailing=st.booleans(),
)(_fuzz_csv)


def _fuzz_csv_bytes(data):
    _outcome(_in_tmp("f.csv", data))


test_fuzz_csv_bytes, test_fuzz_csv_bytes_slow = fast_and_slow(
    fast=30, slow=300,
    data=st.one_of(st.binary(max_size=200),
                   st.text(alphabet="0123456789.,-e \r\n\t\"abn", max_size=200)
                   .map(str.encode)))(_fuzz_csv_bytes)


@pytest.mark.parametrize(("text", "want"), [
    (b"\xef\xbb\xbf1,2\n3,4\n", [[1, 2], [3, 4]]),       # BOM before a number
    (b"\xef\xbb\xbfa,b\r\n1,2\r\n3,4\r\n", [[1, 2], [3, 4]]),
    (b"1,2\r3,4\r", [[1, 2], [3, 4]]),                     # old Mac line endings
    (b'"1","2"\n"3","4"\n', [[1, 2], [3, 4]]),             # quoted numbers
    (b"\n\n1,2\n\n3,4\n\n", [[1, 2], [3, 4]]),             # blank lines
])
def test_csv_variants_read(tmp_path, text, want):
    p = tmp_path / "v.csv"
    p.write_bytes(text)
    np.testing.assert_array_equal(read_csv(p), np.array(want, dtype=float))


@pytest.mark.parametrize(("text", "match"), [
    (b"1,2\n3\n", "line 2 has 1 column"),
    (b"1,2\n3,x\n", r"non-numeric value 'x' at line 2, column 2"),
    (b"\x00\x01\x02", "NUL bytes"),
    (b"\xff\xfe1\x002\x00", "cannot read .* as text CSV"),
    (b"a,b\n", "header but no data rows"),
])
def test_csv_bad_variants_one_line(tmp_path, text, match):
    p = tmp_path / "v.csv"
    p.write_bytes(text)
    with pytest.raises(ValueError, match=match):
        read_csv(p)


# ---------------------------------------------------------------- IDX / gz


def _idx_bytes(code, dims, n_data):
    head = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return head + bytes(range(256)) * (n_data // 256) + bytes(n_data % 256)


_IDX_SIZE = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def _fuzz_idx(code, dims, n_data, exact, gz, mutation):
    if exact and code in _IDX_SIZE and dims and np.prod(dims) < 10**4:
        n_data = int(np.prod(dims)) * _IDX_SIZE[code]  # a well-formed file
    data = _mutate(_idx_bytes(code, dims, n_data), *mutation)
    if gz:
        data = gzip.compress(data)
    out = _outcome(_in_tmp("t-images-idx3-ubyte" + (".gz" if gz else ""), data))
    if out[0] == "ok" and mutation[0] == "none":
        assert out[1].shape[0] == dims[0]


test_fuzz_idx, test_fuzz_idx_slow = fast_and_slow(
    fast=30, slow=400,
    code=st.sampled_from([0x08, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0E, 0x07, 0xFF]),
    dims=st.lists(st.one_of(st.integers(0, 6), st.integers(0, 6),
                            st.sampled_from([10**6, 2**32 - 1])), min_size=0, max_size=5),
    n_data=st.integers(0, 600), exact=st.booleans(), gz=st.booleans(),
    mutation=MUTATIONS)(_fuzz_idx)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_claiming_1e12_rows_refused_under_rlimit(tmp_path, gz):
    """A 20-byte IDX file claiming 10^12 x 28 x 28 pixels, read under a 1 GiB address-space
    limit: refused with a one-line error (exit 2), no allocation attempted."""
    data = _idx_bytes(0x08, (10**12 % 2**32, 28, 28), 16)
    data = data[:4] + struct.pack(">I", 2**32 - 1) + data[8:]
    p = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    p.write_bytes(gzip.compress(data) if gz else data)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from postcollapse.cli import main\n"
        "sys.exit(main(['thresholds', sys.argv[1]]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    assert "truncated" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_rlimit_is_available():
    assert resource.getrlimit(resource.RLIMIT_AS)  # the test above needs RLIMIT_AS


# ---------------------------------------------------------------- parquet


def _fuzz_parquet(cols, n_rows, row_group, mutation, seed):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, kind in enumerate(cols):
        if kind == "float":
            v = pa.array(rng.normal(size=n_rows))
        elif kind == "int":
            v = pa.array(rng.integers(-5, 5, size=n_rows))
        elif kind == "bool":
            v = pa.array(rng.integers(0, 2, size=n_rows).astype(bool))
        elif kind == "null":
            v = pa.array([None if k % 2 else 1.0 for k in range(n_rows)], type=pa.float64())
        elif kind == "nan":
            v = pa.array([np.nan if k == 0 else 1.0 for k in range(n_rows)])
        else:
            v = pa.array([f"s{k}" for k in range(n_rows)])
        arrays[f"c{i}"] = v
    table = pa.table(arrays) if arrays else pa.table({})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=max(row_group, 1))
    _outcome(_in_tmp("f.parquet", _mutate(buf.getvalue(), *mutation)))


test_fuzz_parquet, test_fuzz_parquet_slow = fast_and_slow(
    fast=20, slow=200,
    cols=st.lists(st.sampled_from(["float", "float", "int", "bool", "null", "nan", "str"]),
                  max_size=4),
    n_rows=st.integers(0, 8), row_group=st.integers(0, 4), mutation=MUTATIONS,
    seed=st.integers(0, 99))(_fuzz_parquet)


# ---------------------------------------------------------------- load() on the same inputs


def test_load_wraps_reader_errors(tmp_path):
    """``load`` (the CLI's DATA) passes a reader's one-line error through unchanged."""
    p = tmp_path / "bad.npy"
    p.write_bytes(_npy_with_shape("(1000000000000, 5)"))
    with pytest.raises(ValueError, match=r"header declares shape \(1000000000000, 5\)"):
        load(str(p))


# ---------------------------------------------------------------- latents (diagnose --latents)


def _latents_outcome(path):
    from postcollapse.diagnostics import load_latents

    tracemalloc.start()
    try:
        with time_limit(_SECONDS, "reader"):
            mu, logvar = load_latents(path)
    except (ValueError, TypeError, OSError) as exc:
        assert str(exc) and "\n" not in str(exc).strip(), repr(str(exc))
        return "error"
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < _PEAK_BYTES
    assert mu.shape == logvar.shape and np.all(np.isfinite(mu)) and np.all(np.isfinite(logvar))
    return "ok"


def _fuzz_latents(mu_spec, lv_spec, huge, csv_text, mutation):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        if mu_spec is not None:
            z.writestr("mu.npy", _npy_with_shape("(1000000000000, 5)") if huge
                       else _npy_bytes(*mu_spec))
        if lv_spec is not None:
            z.writestr("logvar.npy", _npy_bytes(*lv_spec))
    _latents_outcome(_in_tmp("l.npz", _mutate(buf.getvalue(), *mutation)))
    _latents_outcome(_in_tmp("l.csv", _mutate(csv_text.encode(), *mutation)))


test_fuzz_latents, test_fuzz_latents_slow = fast_and_slow(
    fast=20, slow=200, mu_spec=st.one_of(st.none(), _ARRAY_SPEC),
    lv_spec=st.one_of(st.none(), _ARRAY_SPEC), huge=st.booleans(),
    csv_text=st.one_of(
        st.text(alphabet="mu_logvar12,.-e\n\r 0123456789x", max_size=120),
        st.just("mu_1,logvar_1\n0.5,-1\n0.25,-2\n1,0\n")),
    mutation=MUTATIONS)(_fuzz_latents)
