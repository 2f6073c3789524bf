"""Readers for data files: ``.npy``, ``.npz``, ``.csv``, IDX / IDX.gz and IDX folders.

Every reader returns a 2-D numeric array of shape (n_samples, n_features) (a 1-D array
becomes one column) or raises ``ValueError`` with a one-line message that names the file
and what is wrong with it. Large ``.npy`` files are memory-mapped, not read: the caller
streams them in row chunks (``Dataset.moments``), so peak memory stays near one chunk.

IDX is the format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/): two zero
bytes, a type code, the number of dimensions, then each dimension as a big-endian uint32,
then the data in C order, big-endian. Images are flattened to rows; uint8 pixels are
scaled to [0, 1] (divided by 255), the convention of the paper's MNIST experiment.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from postcollapse._checks import check_2d, check_finite_array, check_same_rows

__all__ = [
    "read_array",
    "read_xy",
    "read_npy",
    "read_npz",
    "read_csv",
    "load_idx",
    "find_idx_images",
    "check_finite_chunked",
    "check_npy_header",
    "read_npz_member",
    "count_nonfinite",
]

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Rows checked at a time for NaN/inf in a memory-mapped array (keeps the mask small).
_CHECK_ROWS = 1 << 16


def _as_path(path) -> Path:
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    return path


def count_nonfinite(
    a: np.ndarray, *, chunk_rows: int = _CHECK_ROWS
) -> tuple[int, int, tuple[int, int] | None]:
    """Count NaN and inf in a (memory-mapped) 2-D array, reading it in row chunks.

    Returns
    -------
    n_nan, n_inf : int
    first : (row, column) of the first NaN/inf in C order, or None when all are finite.
        Integer arrays cannot hold either: (0, 0, None) without reading them.
    """
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.complexfloating):
        return 0, 0, None
    n_nan = n_inf = 0
    first = None
    for start in range(0, a.shape[0], chunk_rows):
        block = np.asarray(a[start : start + chunk_rows])
        bad = ~np.isfinite(block)
        if not bad.any():
            continue
        k_nan = int(np.isnan(block).sum())
        n_nan += k_nan
        n_inf += int(bad.sum()) - k_nan
        if first is None:
            r, c = np.argwhere(bad)[0]
            first = (start + int(r), int(c))
    return n_nan, n_inf, first


def check_finite_chunked(name: str, a: np.ndarray, *, chunk_rows: int = _CHECK_ROWS) -> None:
    """Like ``check_finite_array`` but for a (memory-mapped) 2-D array, in row chunks.

    Reports the total number of NaN and inf values and the (row, column) of the first.
    Integer arrays cannot hold either and are skipped.
    """
    n_nan, n_inf, first = count_nonfinite(a, chunk_rows=chunk_rows)
    if first is not None:
        raise ValueError(
            f"{name} holds {n_nan} NaN and {n_inf} inf value(s); "
            f"the first is at row {first[0]}, column {first[1]}"
        )


def _finish(name: str, a: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
    """Shape, dtype and finiteness checks shared by every reader."""
    if a.dtype == object or a.dtype.kind in "USV":
        raise TypeError(f"{name} must hold numbers, got dtype {a.dtype}")
    if np.iscomplexobj(a):
        raise TypeError(f"{name} holds complex numbers; pass real-valued data")
    a = check_2d(name, a)
    if check_finite:
        if isinstance(a, np.memmap) or (a.base is not None and isinstance(a.base, np.memmap)):
            check_finite_chunked(name, a)
        else:
            check_finite_array(name, a)
    return a


# ---------------------------------------------------------------------------- .npy / .npz


def read_npy(path, *, mmap: bool = True, check_finite: bool = True) -> np.ndarray:
    """Read a ``.npy`` file holding a 1-D or 2-D numeric array.

    Parameters
    ----------
    path : path-like
    mmap : bool, default True
        Memory-map the file (read-only) instead of reading it; the array's rows are read
        from disk only when used, e.g. chunk by chunk in ``Dataset.moments``.
    check_finite : bool, default True
        Scan the data (chunk by chunk when memory-mapped) for NaN / inf.

    Returns
    -------
    x : ndarray or np.memmap, shape (n_samples, n_features)
    """
    path = _as_path(path)
    name = str(path)
    if not path.is_dir():
        with open(path, "rb") as fh:
            check_npy_header(name, fh, path.stat().st_size)
    try:
        a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        # Object arrays cannot be memory-mapped or loaded without pickle.
        raise ValueError(f"cannot read {name} as .npy: {exc}") from None
    except (EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise ValueError(
            f"cannot read {name} as .npy (truncated or not a .npy file): {exc}"
        ) from None
    return _finish(name, a, check_finite=check_finite)


def check_npy_header(name: str, fh, n_bytes: int) -> None:
    """Refuse a ``.npy`` stream whose header declares more data than its ``n_bytes`` hold.

    Reads only the header from the binary file object ``fh`` (left positioned after it), so
    a tiny file claiming 10^12 rows is refused before any allocation. A header numpy cannot
    parse and an object dtype (it would need unpickling) are refused here too.
    """
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            return
    except (OSError, EOFError):
        raise ValueError(f"cannot read {name} as .npy: the file ends inside its header") from None
    except Exception as exc:  # noqa: BLE001 - numpy's header parser (tokenize, ast) on
        # untrusted bytes raises ValueError, SyntaxError, tokenize.TokenError, ...
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ValueError(f"cannot read {name} as .npy (corrupt header): {reason}") from None
    if dtype.hasobject:
        raise ValueError(
            f"cannot read {name} as .npy: it holds Python objects (dtype {dtype}), which "
            "would need unpickling (never done here); save a numeric array"
        )
    need = math.prod(int(v) for v in shape) * dtype.itemsize
    have = n_bytes - fh.tell()
    if need > have:
        raise ValueError(
            f"cannot read {name} as .npy (truncated or corrupt): its header declares shape "
            f"{tuple(shape)} of {dtype} ({need} bytes) but it holds {max(have, 0)} data bytes"
        )


def read_npz_member(path, npz, key: str) -> np.ndarray:
    """Array ``key`` of an open ``np.load``-ed .npz, header checked before reading.

    Raises ``ValueError`` (one line, naming ``path`` and ``key``) for a member whose header
    declares more data than it holds, an object dtype, a corrupt header or a member that
    is not a .npy array.
    """
    member = key + ".npy"
    try:
        info = npz.zip.getinfo(member)
    except KeyError:
        info = None
    if info is not None:
        try:
            with npz.zip.open(member) as fh:
                check_npy_header(f"{path}['{key}']", fh, info.file_size)
        except (OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
            raise ValueError(f"cannot read array {key!r} of {path}: {exc}") from None
    try:
        a = npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise ValueError(f"cannot read array {key!r} of {path}: {exc}") from None
    if not isinstance(a, np.ndarray):  # a member that is not in .npy format: raw bytes
        raise ValueError(f"cannot read array {key!r} of {path}: its member is not a .npy array")
    return a


def read_npz(path, *, check_finite: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a ``.npz`` file holding an array ``x`` and optionally an array ``y``.

    Returns
    -------
    x : ndarray, shape (n_samples, d0)
    y : ndarray, shape (n_samples, d2), or None when the file holds no ``y``
    """
    path = _as_path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise ValueError(f"cannot read {path} as .npz: {exc}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a .npy file, not .npz; rename it to .npy")
    with npz:
        keys = list(npz.files)
        if "x" not in keys:
            raise ValueError(
                f"{path} holds no array 'x' (found: {', '.join(keys) or 'nothing'}); "
                "save with np.savez(path, x=inputs, y=targets)"
            )
        x = _finish(f"{path}['x']", read_npz_member(path, npz, "x"), check_finite=check_finite)
        y = None
        if "y" in keys:
            y = _finish(f"{path}['y']", read_npz_member(path, npz, "y"), check_finite=check_finite)
            check_same_rows(x, y, x_name=f"{path}['x']", y_name=f"{path}['y']")
    return x, y


# ---------------------------------------------------------------------------- .csv


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_csv(path, *, delimiter: str = ",", check_finite: bool = True) -> np.ndarray:
    """Read a numeric comma-separated file, with or without a header line.

    The first line is a header when any of its cells is not a number. Every other cell
    must be a number (``nan`` / ``inf`` parse, and are then reported as such).

    Returns
    -------
    x : ndarray of float64, shape (n_samples, n_columns)
    """
    path = _as_path(path)
    name = str(path)
    try:
        with open(path, newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"cannot read {name} as text CSV: {exc.reason} at byte {exc.start}"
        ) from None
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark (Excel's "CSV UTF-8")
        text = text[1:]
    if "\x00" in text:
        raise ValueError(f"{name} holds NUL bytes: it is a binary file, not a text CSV")
    lines = text.splitlines()
    first = 0
    while first < len(lines) and not lines[first].strip():
        first += 1
    if first == len(lines):
        raise ValueError(f"{name} is empty; expected numeric rows separated by {delimiter!r}")
    header_cells = next(csv.reader([lines[first]], delimiter=delimiter))
    skip = first + 1 if not all(_is_number(c.strip()) for c in header_cells) else first
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            a = np.loadtxt(
                io.StringIO("\n".join(lines)),  # any line ending (\n, \r\n, \r)
                delimiter=delimiter, skiprows=skip, dtype=np.float64, ndmin=2, quotechar='"',
            )
    except ValueError:
        a = None
    if a is None:
        _raise_csv_problem(name, lines, skip, delimiter, len(header_cells))
    if a.shape[0] == 0:
        raise ValueError(f"{name} has a header but no data rows")
    return _finish(name, a, check_finite=check_finite)


def _raise_csv_problem(name, lines, skip, delimiter, n_header_cols):
    """Find the first bad cell or ragged row (slow path, only after a failed fast parse)."""
    n_cols = None
    for i, cells in enumerate(csv.reader(lines[skip:], delimiter=delimiter), start=skip + 1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if n_cols is None:
            n_cols = len(cells)
        elif len(cells) != n_cols:
            raise ValueError(
                f"{name}: line {i} has {len(cells)} column(s), the lines above have {n_cols}"
            )
        for j, cell in enumerate(cells, start=1):
            if not _is_number(cell.strip()):
                shown = cell.strip() or "(empty)"
                raise ValueError(
                    f"{name}: non-numeric value {shown!r} at line {i}, column {j}; "
                    "every cell after the optional header must be a number"
                )
    raise ValueError(f"cannot parse {name} as numeric CSV")


# ---------------------------------------------------------------------------- IDX


def _read_at_most(fh, n: int, *, block: int = 1 << 24) -> bytes:
    """Up to ``n`` bytes of ``fh``, read in blocks: memory grows with the bytes actually
    there, never with ``n`` (an IDX header may claim far more than the file holds)."""
    parts = []
    left = n
    while left > 0:
        part = fh.read(min(left, block))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def load_idx(path, *, scale: bool = True, flatten: bool = True) -> np.ndarray:
    """Read an IDX file (MNIST / Fashion-MNIST format), optionally gzip-compressed.

    Parameters
    ----------
    path : path-like
        e.g. ``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz`` (gzip is
        detected from the content, not the name).
    scale : bool, default True
        Return uint8 data as float64 divided by 255 (pixels in [0, 1]). Other types are
        returned as float64 unscaled. With ``scale=False`` the stored dtype is kept.
    flatten : bool, default True
        Reshape (n, d1, d2, ...) to (n, d1 * d2 * ...); a 1-D file (labels) stays 1-D.

    Returns
    -------
    a : ndarray, shape (n, prod(dims[1:])) when flattened, or (n,) for a 1-D file
    """
    path = _as_path(path)
    name = str(path)
    try:
        with _open_maybe_gzip(path) as fh:
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise ValueError(
                    f"{name} is not an IDX file (bad magic number {head.hex() or 'empty'}); "
                    "expected 00 00 <type> <ndim> as in MNIST's train-images-idx3-ubyte"
                )
            dtype = _IDX_DTYPES[head[2]]
            ndim = head[3]
            if ndim < 1:
                raise ValueError(f"{name}: IDX header gives 0 dimensions")
            raw_dims = fh.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise ValueError(f"{name} is truncated: the IDX header is incomplete")
            dims = tuple(int(v) for v in np.frombuffer(raw_dims, dtype=">u4"))
            expected = math.prod(dims) * dtype.itemsize  # exact (Python ints never overflow)
            data = _read_at_most(fh, expected + 1)
    except (EOFError, gzip.BadGzipFile, zipfile.BadZipFile) as exc:
        raise ValueError(f"{name} is truncated or a corrupt gzip file: {exc}") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise ValueError(f"cannot read {name} as IDX: {exc}") from None
    if len(data) < expected:
        raise ValueError(
            f"{name} is truncated: header {dims} needs {expected} data bytes, found {len(data)}"
        )
    if len(data) > expected:
        raise ValueError(f"{name}: more data than its IDX header {dims} describes")
    a = np.frombuffer(data, dtype=dtype).reshape(dims)
    if flatten and a.ndim > 2:
        a = a.reshape(dims[0], -1)
    if not scale:
        return a.astype(dtype.newbyteorder("="))
    if dtype == np.dtype(">u1"):
        out = a.astype(np.float64)
        out /= 255.0  # in place: one float64 copy of the images, not two
        return out
    return a.astype(np.float64)


def find_idx_images(folder, *, split: str = "train") -> Path:
    """Path of ``{split}-images-idx3-ubyte`` (or ``.gz``) inside ``folder``."""
    folder = _as_path(folder)
    stem = f"{split}-images-idx3-ubyte"
    for candidate in (stem, stem + ".gz", stem.replace("-idx3-", ".idx3-"),
                      stem.replace("-idx3-", ".idx3-") + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise ValueError(
        f"folder {folder} holds no {stem} or {stem}.gz; point DATA at a folder with the "
        "MNIST / Fashion-MNIST IDX files, or at a file"
    )


# ---------------------------------------------------------------------------- dispatch

_IDX_NAME = re.compile(r"idx\d", re.IGNORECASE)


def read_xy(path, *, check_finite: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read inputs and (for ``.npz`` files holding ``y``) targets from a file or folder.

    ``.npy`` -> memory-mapped 2-D array; ``.npz`` -> arrays ``x`` and optional ``y``;
    ``.csv`` -> numeric table; IDX / IDX.gz (by content) -> flattened images in [0, 1];
    a folder -> its ``train-images-idx3-ubyte[.gz]``.

    Returns
    -------
    x : ndarray or np.memmap, shape (n_samples, d0)
    y : ndarray, shape (n_samples, d2), or None
    """
    path = _as_path(path)
    from postcollapse.data.parquet import is_parquet, read_parquet

    if is_parquet(path):  # a .parquet file or a folder of them: every numeric column
        return read_parquet(path)
    if path.is_dir():
        return _finish(str(path), load_idx(find_idx_images(path))), None
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path, check_finite=check_finite)
    if suffix == ".npy":
        return read_npy(path, check_finite=check_finite), None
    if suffix == ".csv":
        return read_csv(path, check_finite=check_finite), None
    if suffix in (".gz", ".idx", ".ubyte", "") or _IDX_NAME.search(path.name) or suffix.startswith(
        ".idx"
    ):
        return _finish(str(path), load_idx(path), check_finite=check_finite), None
    raise ValueError(
        f"cannot tell the format of {path} from its suffix {suffix!r}; use .npy, .npz, .csv, "
        "or IDX (MNIST format, optionally .gz)"
    )


def read_array(path, *, check_finite: bool = True) -> np.ndarray:
    """Read the input array ``x`` of a file or folder (see ``read_xy``).

    Returns
    -------
    x : ndarray or np.memmap, shape (n_samples, n_features)
    """
    return read_xy(path, check_finite=check_finite)[0]
