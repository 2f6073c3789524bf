"""Independent per-beta work (beta x seed sweeps) spread over a cluster in beta chunks.

A sweep over a beta grid is embarrassingly parallel across betas: split the grid into
contiguous chunks, run ``fn(beta_chunk)`` for each where a worker is free, and
concatenate the returned rows in chunk order, i.e. in the order of the grid.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from numbers import Integral

import dask
import numpy as np

from postcollapse._checks import check_betas

__all__ = ["map_betas"]


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _active_client():
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - dask without distributed
        return None
    try:
        return default_client()
    except ValueError:  # no client has been created
        return None


def _chunk_sizes(n: int, chunks, client) -> list[int]:
    if chunks is None:
        slots = sum(client.nthreads().values()) if client is not None else os.cpu_count() or 1
        size = math.ceil(n / max(1, min(slots, n)))
        chunks = size
    if _is_int(chunks):
        if chunks < 1:
            raise ValueError(f"chunks must be >= 1 betas per chunk, got {chunks}")
        size = int(chunks)
        return [min(size, n - s) for s in range(0, n, size)]
    try:
        sizes = [int(c) if _is_int(c) else None for c in chunks]
    except TypeError:
        raise TypeError(
            f"chunks must be an int (betas per chunk) or a sequence of ints, "
            f"got {type(chunks).__name__}"
        ) from None
    if any(s is None or s < 1 for s in sizes) or sum(sizes) != n:
        raise ValueError(
            f"chunks {tuple(chunks)} must be positive integers summing to the {n} betas"
        )
    return sizes


def _check_rows(rows, i: int, chunk: np.ndarray) -> list:
    if isinstance(rows, Mapping) or not isinstance(rows, list | tuple):
        raise TypeError(
            f"fn returned {type(rows).__name__} for beta chunk {i} ({chunk[0]:g}..{chunk[-1]:g}); "
            "it must return a list of row dicts"
        )
    for r in rows:
        if not isinstance(r, Mapping):
            raise TypeError(
                f"fn returned a list holding {type(r).__name__} for beta chunk {i}; "
                "each row must be a dict"
            )
    return list(rows)


def map_betas(fn, betas, *, client=None, chunks=None) -> list[dict]:
    """Run ``fn`` on contiguous chunks of a beta grid in parallel; rows in beta order.

    Parameters
    ----------
    fn : callable
        ``fn(beta_chunk) -> list of dict``: ``beta_chunk`` is a float64 array of shape
        (k,), a contiguous piece of ``betas``; the returned rows (any number per beta,
        e.g. one per seed) are concatenated in chunk order. Each call must be independent
        of the others (e.g. ``lambda bs: train.sweep(data, betas=bs, ...).rows``). On a
        cluster of processes ``fn`` is pickled (cloudpickle: lambdas and closures work)
        and whatever it closes over travels with it.
    betas : array-like of shape (n_betas,)
        Finite betas > 0, in the order the rows should come back.
    client : distributed.Client, optional
        Where to run. None uses the active client if there is one and dask's default
        (threaded) scheduler otherwise.
    chunks : int or sequence of int, optional
        Betas per chunk (an int), or the size of each chunk (summing to n_betas).
        Default: one chunk per worker thread of the client (per CPU core without one).

    Returns
    -------
    list of dict
        The rows of every chunk, concatenated in the order of ``betas``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (beta_chunk -> list of row dicts), got {fn!r}")
    b = check_betas(betas)
    if client is None:
        client = _active_client()
    sizes = _chunk_sizes(b.size, chunks, client)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    pieces = [b[lo:hi].copy() for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    if client is not None:
        futures = [client.submit(fn, piece, pure=False) for piece in pieces]
        results = client.gather(futures)
    else:
        results = dask.compute(*[dask.delayed(fn, pure=False)(piece) for piece in pieces])
    rows: list[dict] = []
    for i, (res, piece) in enumerate(zip(results, pieces, strict=True)):
        rows.extend(_check_rows(res, i, piece))
    return rows
