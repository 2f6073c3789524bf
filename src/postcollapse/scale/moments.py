"""Moments of row-blocked data (dask arrays, memory maps, ``.npy`` shards) by tree reduction.

Each row block becomes a ``Moments`` where it lives (``Moments.from_arrays``: shifted,
float64, so data far from zero keep their digits) and the partial moments are combined
with ``Moments.merge`` (Chan, Golub & LeVeque 1979) in a tree of fixed fan-in. The tree
depends only on the blocks, not on the scheduler, so threads, processes and a cluster
give bit-identical results; it agrees with one-shot ``Moments.from_arrays`` to rounding.
"""

from __future__ import annotations

import math
import mmap
import os
import uuid
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np

from postcollapse._checks import NonFiniteDataError, check_int_at_least, check_same_rows
from postcollapse.data.dataset import Dataset, default_chunk_rows
from postcollapse.data.files import count_nonfinite
from postcollapse.theory import Moments
from postcollapse.theory import spectrum as _theory_spectrum
from postcollapse.theory.spectrum import DEFAULT_RTOL

__all__ = ["moments", "moments_from_files", "spectrum"]

DEFAULT_SPLIT_EVERY = 8


# ---------------------------------------------------------------------------- helpers
def _describe_chunks(chunks: tuple) -> str:
    if len(chunks) <= 6:
        return str(tuple(int(c) for c in chunks))
    head = ", ".join(str(int(c)) for c in chunks[:3])
    return f"({head}, ..., {int(chunks[-1])}; {len(chunks)} blocks)"


@dataclass(frozen=True)
class _FileRows:
    """Rows [start, stop) of an array stored in a file, opened by the worker that reads them.

    Only this record travels to a worker (the file must be visible there). With
    ``offset`` (the byte position of row ``start`` of a C-contiguous array) the rows are
    memory-mapped on their own, so ``Dataset.moments`` can release the pages it has read;
    without it the ``.npy`` file is memory-mapped whole and sliced.
    """

    filename: str
    start: int
    stop: int
    dtype: np.dtype | None = None
    n_cols: int | None = None
    offset: int | None = None
    in_messages: bool = True  # name the file and the row within it in NaN/inf messages

    def open(self) -> np.ndarray:
        if self.offset is None:
            return _open_npy(self.filename)[self.start : self.stop]
        return np.memmap(self.filename, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=(self.stop - self.start, self.n_cols))


def _file_position(a) -> tuple[str, int] | None:
    """(file name, byte position of ``a[0, 0]``) of a C-contiguous memory map, else None.

    ``np.memmap`` slices keep the parent's ``offset``, so the position is found from the
    data address within the mapping instead (the mapping starts at the offset rounded
    down to the allocation granularity, as ``np.memmap`` maps it).
    """
    if not isinstance(a, np.memmap) or a.filename is None or a.size == 0:
        return None
    mm = getattr(a, "_mmap", None)
    if mm is None or not a.flags.c_contiguous:
        return None
    try:
        mapped = np.frombuffer(mm, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):  # pragma: no cover - unusual mappings
        return None
    into = a.ctypes.data - mapped.ctypes.data
    del mapped
    if into < 0 or into + a.nbytes > len(mm):  # pragma: no cover - not this mapping
        return None
    return os.fspath(a.filename), int(a.offset - a.offset % mmap.ALLOCATIONGRANULARITY + into)


def _nonfinite_error(name: str, a, *, offset: int, source: _FileRows | None = None):
    """ValueError naming the global row of the first NaN/inf in block ``a`` (or None).

    ``a`` holds rows ``offset .. offset + len(a) - 1`` of the whole data; it is scanned in
    row chunks so a memory-mapped block is never read whole.
    """
    n_nan, n_inf, first = count_nonfinite(a)
    if first is None:
        return None
    stop = offset + a.shape[0] - 1
    local = ""
    if source is not None and source.in_messages:
        local = f" (row {source.start + first[0]} of {source.filename})"
    return NonFiniteDataError(
        f"{name} holds {n_nan} NaN and {n_inf} inf value(s) in rows {offset}..{stop}; "
        f"the first is at row {offset + first[0]}{local}, column {first[1]}; "
        "remove or impute those rows"
    )


def _block_moments(x, y, offset: int, names=("x", "y (target)")) -> Moments:
    """Moments of one row block (arrays or ``_FileRows``); NaN/inf errors name the row.

    A memory-mapped block is streamed by ``Dataset.moments``, which releases the pages it
    has read (RSS stays near a chunk); a block in memory is one ``Moments.from_arrays``.
    """
    xa = x.open() if isinstance(x, _FileRows) else x
    ya = y.open() if isinstance(y, _FileRows) else y
    try:
        if xa.shape[0] >= 2:
            ds = Dataset(names[0], xa, ya)
            if ds.memory_mapped:
                return ds.moments()
        return Moments.from_arrays(xa, ya)
    except ValueError:
        for name, spec, a in ((names[0], x, xa), (names[1], y, ya)):
            if a is not None:
                src = spec if isinstance(spec, _FileRows) else None
                err = _nonfinite_error(name, a, offset=offset, source=src)
                if err is not None:
                    raise err from None
        raise


def _open_npy(path: str) -> np.ndarray:
    """Memory-map a 1-D or 2-D numeric ``.npy`` file read-only, as (n_rows, n_columns)."""
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise ValueError(f"cannot read {path} as .npy: {exc}") from None
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {a.shape}; shards must be 1-D or 2-D")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise TypeError(f"{path} must hold real numbers, got dtype {a.dtype}")
    return a


def _file_rows(a, filename: str, start: int, stop: int, *, in_messages: bool) -> _FileRows:
    """Rows [start, stop) of the memory map ``a`` (of the .npy ``filename``) as _FileRows."""
    pos = _file_position(a)
    if pos is None:
        return _FileRows(filename, start, stop, in_messages=in_messages)
    row_bytes = a.shape[1] * a.dtype.itemsize
    return _FileRows(pos[0], start, stop, a.dtype, a.shape[1], pos[1] + start * row_bytes,
                     in_messages)


def _merge_all(*parts: Moments) -> Moments:
    out = parts[0]
    for p in parts[1:]:
        out = out.merge(p)
    return out


def _tree_reduce(parts: list, split_every: int, scheduler) -> Moments:
    """Merge delayed Moments ``split_every`` at a time, in order, and compute the root."""
    level = parts
    while len(level) > 1:
        level = [
            dask.delayed(_merge_all, pure=True)(*level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    (m,) = dask.compute(level[0], scheduler=scheduler)
    return m


def _check_lazy_2d(name: str, a):
    """``a`` as a 2-D dask array or array-like (1-D: one column); check dtype and chunks."""
    if not isinstance(a, da.Array) and not all(
        hasattr(a, attr) for attr in ("shape", "dtype", "ndim", "__getitem__")
    ):
        a = np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]  # a view: a memory map stays a memory map
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if isinstance(a, da.Array) and any(math.isnan(c) for c in a.chunks[0]):
        raise ValueError(
            f"{name} has unknown row chunk sizes (nan); call "
            f"{name.split()[0]}.compute_chunk_sizes() first"
        )
    return a


def _rows(a, start: int, stop: int):
    return a[start:stop]


def _delayed_blocks(a, row_chunks: tuple) -> list:
    """One delayed (rows, d) block of ``a`` per entry of ``row_chunks``.

    A dask array is rechunked to these rows and one column block. Any other array is
    put in the graph once under a random name and sliced block by block: ``from_array`` would
    copy it and hash its data (dask >= 2024), and read a memory map into memory whole.
    """
    if isinstance(a, da.Array):
        return list(a.rechunk((row_chunks, -1)).to_delayed().ravel())
    bounds = np.concatenate([[0], np.cumsum(row_chunks)]).astype(int)
    if _file_position(a) is not None:  # a memory map: each block maps its own rows
        return [
            _file_rows(a, None, int(lo), int(hi), in_messages=False)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    ref = dask.delayed(a, name=f"postcollapse-array-{uuid.uuid4().hex}", traverse=False)
    return [
        dask.delayed(_rows, pure=True)(ref, int(lo), int(hi))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def _row_chunks(x, y, chunk_rows) -> tuple:
    """Common row blocks of x and y: chunk_rows, else a dask input's, else ~32 MiB each."""
    n = x.shape[0]
    if chunk_rows is not None:
        chunk_rows = check_int_at_least("chunk_rows", chunk_rows, 1)
        return tuple(min(chunk_rows, n - s) for s in range(0, n, chunk_rows))
    xc = x.chunks[0] if isinstance(x, da.Array) else None
    yc = y.chunks[0] if isinstance(y, da.Array) else None
    if xc is not None and yc is not None and xc != yc:
        raise ValueError(
            f"x has row chunks {_describe_chunks(xc)} but the target y has "
            f"{_describe_chunks(yc)}; rechunk y with y.rechunk({{0: x.chunks[0]}}) "
            "or pass chunk_rows= to rechunk both"
        )
    if xc is not None or yc is not None:
        return tuple(int(c) for c in (xc if xc is not None else yc))
    rows = default_chunk_rows(x.shape[1] + (0 if y is None else y.shape[1]))
    return tuple(min(rows, n - s) for s in range(0, n, rows))


def _check_split_every(split_every) -> int:
    return check_int_at_least("split_every", split_every, 2)


# ---------------------------------------------------------------------------- API
def moments(
    x,
    y=None,
    *,
    chunk_rows: int | None = None,
    split_every: int = DEFAULT_SPLIT_EVERY,
    scheduler=None,
) -> Moments:
    """Moments of row-blocked ``x`` (and target ``y``): per-block moments, tree-merged.

    Parameters
    ----------
    x : dask array, ndarray or np.memmap, shape (n_samples, d0)
        A dask array keeps its row blocks (columns are rechunked into one block). Other
        arrays are neither copied nor hashed: they are sliced in row blocks of
        ``chunk_rows`` (default about 32 MiB of float64 per block), so a memory map is
        read block by block (its streamed pages are released as it goes).
    y : same kinds, shape (n_samples, d2), optional
        The target; None is the plain VAE (target = x). It must have the same row blocks
        as x (a non-dask y follows x's blocks, and vice versa).
    chunk_rows : int, optional
        Rows per block; given, both x and y are rechunked to it.
    split_every : int, default 8
        Fan-in of the merge tree.
    scheduler : optional
        Passed to ``dask.compute``: None uses the active ``distributed.Client`` if there
        is one and dask's default scheduler otherwise; or "threads", "sync", a Client.

    Returns
    -------
    Moments
        Equal to ``Moments.from_arrays(x, y)`` up to rounding.

    Raises
    ------
    ValueError
        x and y differ in row count or row blocks; a block holds NaN or inf (the message
        names the global row); unknown (nan) chunk sizes.

    Notes
    -----
    A numpy array or memory map is embedded in the dask graph: on a cluster of separate
    processes it is shipped to the workers. For data that live in files, use
    ``moments_from_files`` so that each worker reads its own shard.
    """
    split_every = _check_split_every(split_every)
    x = _check_lazy_2d("x", x)
    if y is not None:
        y = _check_lazy_2d("y (target)", y)
        check_same_rows(x, y)
    if x.shape[0] == 0:
        return Moments.empty(x.shape[1], None if y is None else y.shape[1])
    row_chunks = _row_chunks(x, y, chunk_rows)
    xs = _delayed_blocks(x, row_chunks)
    ys = _delayed_blocks(y, row_chunks) if y is not None else [None] * len(xs)
    offsets = np.concatenate([[0], np.cumsum(row_chunks)[:-1]]).astype(int)
    parts = [
        dask.delayed(_block_moments, pure=True)(bx, by, int(off))
        for bx, by, off in zip(xs, ys, offsets, strict=True)
    ]
    return _tree_reduce(parts, split_every, scheduler)


def _as_paths(name: str, paths) -> list[str]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    try:
        paths = list(paths)
    except TypeError:
        raise TypeError(
            f"{name} must be a list of .npy paths, got {type(paths).__name__}"
        ) from None
    for p in paths:
        if not isinstance(p, str | os.PathLike):
            raise TypeError(f"{name} must hold paths, got {type(p).__name__}")
    # Absolute: workers may run in another directory (the files must be visible to them).
    return [os.path.abspath(os.fspath(p)) for p in paths]


def moments_from_files(
    paths,
    *,
    target_paths=None,
    chunk_rows: int | None = None,
    split_every: int = DEFAULT_SPLIT_EVERY,
    scheduler=None,
) -> Moments:
    """Moments of the row-concatenation of ``.npy`` shards, each read where it is reduced.

    Parameters
    ----------
    paths : sequence of path-like
        ``.npy`` files holding arrays of shape (n_i, d0) (1-D: one column), in row order.
        Each block memory-maps its own file, so only paths travel to the workers; the
        files must be visible to them (a shared file system on a cluster).
    target_paths : sequence of path-like, optional
        One target file per shard, shape (n_i, d2); None is the plain VAE.
    chunk_rows : int, optional
        Split shards into blocks of at most this many rows (default: one block per shard;
        a block streams its rows in bounded memory either way).
    split_every, scheduler
        As in ``moments``.

    Returns
    -------
    Moments
        Equal to ``Moments.from_arrays`` of the concatenated shards up to rounding.
    """
    split_every = _check_split_every(split_every)
    paths = _as_paths("paths", paths)
    if not paths:
        raise ValueError("paths is empty; pass at least one .npy file")
    targets = [None] * len(paths)
    if target_paths is not None:
        targets = _as_paths("target_paths", target_paths)
        if len(targets) != len(paths):
            raise ValueError(
                f"{len(paths)} input shard(s) but {len(targets)} target shard(s); "
                "pass one target file per input file"
            )
    if chunk_rows is not None:
        chunk_rows = check_int_at_least("chunk_rows", chunk_rows, 1)
    # Read only the headers here (a memory map touches no data) to validate shapes.
    shapes = [_open_npy(p).shape for p in paths]
    d0 = shapes[0][1]
    for p, s in zip(paths, shapes, strict=True):
        if s[1] != d0:
            raise ValueError(f"shard {p} has {s[1]} columns but {paths[0]} has {d0}")
    d2 = None
    if target_paths is not None:
        tshapes = [_open_npy(t).shape for t in targets]
        d2 = tshapes[0][1]
        for p, t, s, ts in zip(paths, targets, shapes, tshapes, strict=True):
            check_same_rows(s[0], ts[0], x_name=f"shard {p}", y_name=f"its target {t}")
            if ts[1] != d2:
                raise ValueError(f"target shard {t} has {ts[1]} columns but {targets[0]} has {d2}")
    parts = []
    offset = 0
    for p, t, (n, _) in zip(paths, targets, shapes, strict=True):
        xm = _open_npy(p)
        ym = None if t is None else _open_npy(t)
        step = n if chunk_rows is None else chunk_rows
        for start in range(0, n, max(step, 1)):
            stop = min(start + step, n)
            xr = _file_rows(xm, p, start, stop, in_messages=True)
            yr = None if ym is None else _file_rows(ym, t, start, stop, in_messages=True)
            parts.append(
                dask.delayed(_block_moments, pure=True)(xr, yr, offset + start, (p, t))
            )
        offset += n
    if not parts:
        return Moments.empty(d0, d2)
    return _tree_reduce(parts, split_every, scheduler)


def spectrum(
    x,
    y=None,
    *,
    chunk_rows: int | None = None,
    split_every: int = DEFAULT_SPLIT_EVERY,
    scheduler=None,
    rtol: float = DEFAULT_RTOL,
    vectors: bool = True,
):
    """``postcollapse.theory.spectrum`` of ``moments(x, y, ...)`` (see both).

    Returns
    -------
    Spectrum
    """
    m = moments(x, y, chunk_rows=chunk_rows, split_every=split_every, scheduler=scheduler)
    return _theory_spectrum(m, rtol=rtol, vectors=vectors)

