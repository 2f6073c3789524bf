"""Parquet tables as numeric data: streamed by row group, one-line errors (needs pyarrow).

A Parquet DATA is a file, a folder of ``*.parquet`` files, or a glob; its rows are the
files' rows in sorted file order. Inputs are the chosen numeric ``columns`` (default:
every numeric column that is not a target column), the target the ``target_columns``
(default: none, a plain VAE). Only one row group is in memory at a time, so moments of a
table larger than memory need about one row group of float64.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from postcollapse._checks import NonFiniteDataError

__all__ = [
    "PARQUET_SUFFIXES",
    "ParquetSource",
    "RowGroup",
    "is_parquet",
    "parquet_files",
    "parquet_source",
    "read_row_group",
    "row_group_moments",
    "parquet_moments",
    "read_parquet",
]

PARQUET_SUFFIXES = (".parquet", ".pq")


def _pq():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(
            "reading Parquet needs pyarrow; install the extra: pip install 'postcollapse[scale]'"
        ) from None
    return pq


def _glob(spec: str) -> list[str]:
    return sorted(glob.glob(os.path.expanduser(spec))) if glob.has_magic(spec) else []


def is_parquet(spec) -> bool:
    """True when ``spec`` names a Parquet file, a folder holding some, or a glob of them."""
    if not isinstance(spec, str | os.PathLike):
        return False
    spec = os.fspath(spec)
    path = Path(spec).expanduser()
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    if path.is_dir():
        return any(p.suffix.lower() in PARQUET_SUFFIXES for p in path.iterdir())
    files = _glob(spec)
    return bool(files) and all(Path(f).suffix.lower() in PARQUET_SUFFIXES for f in files)


def parquet_files(spec) -> list[str]:
    """Absolute paths of the Parquet files of a file, folder or glob, sorted."""
    spec = os.fspath(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in PARQUET_SUFFIXES)
        if not files:
            raise ValueError(f"folder {spec} holds no .parquet files")
    elif path.exists():
        files = [str(path)]
    else:
        files = _glob(spec)
        if not files:
            raise FileNotFoundError(2, "No such file or directory", spec)
    return [os.path.abspath(f) for f in files]


@dataclass(frozen=True)
class RowGroup:
    """Rows ``offset .. offset + n_rows - 1`` of the table: row group ``index`` of ``path``."""

    path: str
    index: int
    n_rows: int
    offset: int


@dataclass(frozen=True)
class ParquetSource:
    """The files, chosen columns and row groups of a Parquet DATA (from the footers only)."""

    name: str
    columns: tuple[str, ...]
    target_columns: tuple[str, ...] | None
    row_groups: tuple[RowGroup, ...]

    @property
    def n_samples(self) -> int:
        return sum(g.n_rows for g in self.row_groups)

    @property
    def plain(self) -> bool:
        return self.target_columns is None


def _split(columns) -> tuple[str, ...] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    columns = tuple(str(c) for c in columns)
    if not columns:
        raise ValueError("a column list must name at least one column")
    return columns


def _numeric(field) -> bool:
    import pyarrow.types as pt

    t = field.type
    return pt.is_integer(t) or pt.is_floating(t) or pt.is_boolean(t) or pt.is_decimal(t)


def parquet_source(spec, *, columns=None, target_columns=None) -> ParquetSource:
    """Validate the columns against every file's schema and list the row groups.

    Parameters
    ----------
    spec : path-like or str
        A ``.parquet`` file, a folder of them, or a glob.
    columns : str or sequence of str, optional
        Input columns ("a,b,c" or a list); default: every numeric non-target column.
    target_columns : str or sequence of str, optional
        Target columns (a conditional VAE); default: none (plain VAE, target = x).

    Raises
    ------
    ValueError
        A named column is missing or not numeric, or the files disagree.
    """
    pq = _pq()
    files = parquet_files(spec)
    columns, target_columns = _split(columns), _split(target_columns)
    groups = []
    offset = 0
    chosen = None
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise ValueError(f"cannot read {f} as Parquet: {reason}") from None
        schema = pf.schema_arrow
        names = list(schema.names)
        for c in (columns or ()) + (target_columns or ()):
            if c not in names:
                raise ValueError(
                    f"{f} has no column {c!r} (columns: {', '.join(names)}); fix --columns / "
                    "--target-columns"
                )
            if not _numeric(schema.field(c)):
                raise ValueError(
                    f"{f}: column {c!r} is not numeric ({schema.field(c).type}); choose "
                    "numeric columns with --columns / --target-columns"
                )
        cols = columns
        if cols is None:
            skip = set(target_columns or ())
            cols = tuple(n for n in names if n not in skip and _numeric(schema.field(n)))
            if not cols:
                raise ValueError(f"{f} has no numeric columns; choose some with --columns")
        if chosen is None:
            chosen = cols
        elif cols != chosen:
            raise ValueError(f"{f} has numeric columns {list(cols)} but {files[0]} has "
                             f"{list(chosen)}; give --columns")
        meta = pf.metadata
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            if n:
                groups.append(RowGroup(f, i, n, offset))
                offset += n
    name = os.fspath(spec)
    if offset < 2:
        raise ValueError(f"{name} holds {offset} row(s); the theory needs at least 2")
    return ParquetSource(name, chosen, target_columns, tuple(groups))


def read_row_group(group: RowGroup, columns) -> np.ndarray:
    """The float64 array (n_rows, len(columns)) of one row group; NaN, inf or nulls raise.

    Raises
    ------
    NonFiniteDataError
        Naming the file, the row (within the file and within the whole table) and column.
    """
    import pyarrow as pa

    pq = _pq()
    out = np.empty((group.n_rows, len(columns)), dtype=np.float64)
    try:
        table = pq.ParquetFile(group.path).read_row_group(group.index, columns=list(columns))
        for j, c in enumerate(columns):  # nulls become NaN (and are reported as empty cells)
            out[:, j] = table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types on corrupt files
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ValueError(
            f"cannot read row group {group.index} of {group.path} (corrupt Parquet?): {reason}"
        ) from None
    bad = ~np.isfinite(out)
    if bad.any():
        r, j = (int(v) for v in np.argwhere(bad)[0])
        # row within the file: rows of the row groups before this one
        meta = pq.ParquetFile(group.path).metadata
        before = sum(meta.row_group(i).num_rows for i in range(group.index))
        raise NonFiniteDataError(
            f"{group.path}: row {before + r} (row {group.offset + r} of the data), column "
            f"{columns[j]!r} is {'empty' if np.isnan(out[r, j]) else 'infinite'} or not a "
            f"finite number ({int(bad.sum())} such cell(s) in that row group); remove or "
            "impute those rows"
        )
    return out


def row_group_moments(group: RowGroup, columns, target_columns):
    """``Moments`` of one row group (inputs ``columns``, target ``target_columns`` or None)."""
    from postcollapse.theory import Moments

    x = read_row_group(group, columns)
    y = None if target_columns is None else read_row_group(group, target_columns)
    return Moments.from_arrays(x, y)


def parquet_moments(spec, *, columns=None, target_columns=None):
    """Moments of a Parquet DATA, streamed one row group at a time (in this process).

    Returns
    -------
    source : ParquetSource
    moments : postcollapse.theory.Moments
    """
    from postcollapse.theory import Moments

    src = spec if isinstance(spec, ParquetSource) else parquet_source(
        spec, columns=columns, target_columns=target_columns)
    d2 = None if src.target_columns is None else len(src.target_columns)
    m = Moments.empty(len(src.columns), d2)
    for g in src.row_groups:
        m = m.merge(row_group_moments(g, src.columns, src.target_columns))
    return src, m


def read_parquet(spec, *, columns=None, target_columns=None):
    """Read a whole Parquet DATA into memory (for training).

    Returns
    -------
    x : ndarray of float64, shape (n_samples, n_columns)
    y : ndarray of float64, shape (n_samples, n_target_columns), or None
    """
    src = parquet_source(spec, columns=columns, target_columns=target_columns)
    x = np.concatenate([read_row_group(g, src.columns) for g in src.row_groups])
    y = None
    if src.target_columns is not None:
        y = np.concatenate([read_row_group(g, src.target_columns) for g in src.row_groups])
    return x, y
