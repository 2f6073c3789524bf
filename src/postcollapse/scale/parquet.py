"""Moments of Parquet tables on a cluster: each task reads its own row group.

Only the file names, row-group numbers and column names travel to the workers (the files
must be visible to them, e.g. on shared storage); each worker reads its row group with
pyarrow and returns a d x d ``Moments``, and the partial moments are merged in a tree of
fixed fan-in in row order, so the result does not depend on the scheduler.
"""

from __future__ import annotations

import dask

from postcollapse.data.parquet import ParquetSource, parquet_source, row_group_moments
from postcollapse.theory import Moments

__all__ = ["moments_from_parquet"]


def _merge(*parts: Moments) -> Moments:
    out = parts[0]
    for p in parts[1:]:
        out = out.merge(p)
    return out


def moments_from_parquet(
    spec,
    *,
    columns=None,
    target_columns=None,
    split_every: int = 8,
    scheduler=None,
) -> tuple[ParquetSource, Moments]:
    """Moments of a Parquet file, folder or glob, one task per row group.

    Parameters
    ----------
    spec : path-like, str or ParquetSource
        A ``.parquet`` file, a folder of them, or a glob (see
        ``postcollapse.data.parquet.parquet_source``).
    columns, target_columns : str or sequence of str, optional
        Input and target columns (default: every numeric column; no target).
    split_every : int, default 8
        Fan-in of the merge tree.
    scheduler : optional
        Passed to ``dask.compute`` (None: the active ``distributed.Client`` if any).

    Returns
    -------
    source : ParquetSource
    moments : Moments
        Equal to the in-process ``parquet_moments`` up to rounding.
    """
    src = spec if isinstance(spec, ParquetSource) else parquet_source(
        spec, columns=columns, target_columns=target_columns)
    level = [
        dask.delayed(row_group_moments, pure=True)(g, src.columns, src.target_columns)
        for g in src.row_groups
    ]
    split_every = max(2, int(split_every))
    while len(level) > 1:
        level = [dask.delayed(_merge, pure=True)(*level[i : i + split_every])
                 for i in range(0, len(level), split_every)]
    (m,) = dask.compute(level[0], scheduler=scheduler)
    return src, m
